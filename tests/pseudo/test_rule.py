"""The pseudo-label keep rule on hand-made masks whose figures are known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fetalgen.pseudo.rule import KeepRule


def ellipse(shape=(64, 64), centre=(32, 32), axes=(20, 14)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


RULE = KeepRule(min_predicted_iou=0.9, min_ellipse_iou=0.9, area_range=(0.01, 0.7))


def test_a_confident_head_is_kept_and_a_doubtful_one_is_not() -> None:
    head = ellipse()  # drawn with its outline: semi-axes ~20.5 and 14.5 px, pi * 20.5 * 14.5 = 934 px of 4096
    cleaned, kept = RULE.verdict(head, 0.95)
    assert kept.passed and kept.reasons == [] and (cleaned == head).all()
    assert kept.area_frac == pytest.approx(np.pi * 20.5 * 14.5 / 4096, rel=0.01) and kept.ellipse_iou > 0.95
    _, doubtful = RULE.verdict(head, 0.85)  # the same mask, SAM less sure of it
    assert not doubtful.passed and doubtful.reasons == ["predicted_iou: 0.850 < 0.9"]
    _, unknown = RULE.verdict(head, float("nan"))
    assert not unknown.passed and unknown.reasons[0].startswith("predicted_iou")
    _, unasked = KeepRule(min_predicted_iou=None).verdict(head, -0.08)  # a random IoU head: not consulted
    assert unasked.passed


def test_the_mask_is_cleaned_as_a_head_before_it_is_judged() -> None:
    speck = np.zeros((64, 64), bool)
    speck[2:4, 2:4] = True  # a 4-pixel island apart from the head
    holed = ellipse()
    holed[30:34, 30:34] = False  # a 16-pixel hole inside it
    cleaned, kept = RULE.verdict(holed | speck, 0.95)
    assert kept.passed and (cleaned == ellipse()).all()


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        (np.zeros((64, 64), bool), "empty"),
        (np.ones((64, 64), bool), "area_frac: 1.0000 > 0.7"),  # the whole image: the prompt found nothing
        (ellipse(axes=(3, 2)), "area_frac"),  # ~19 px of 4096 = 0.005 < 0.01
    ],
)
def test_implausible_masks_are_rejected_with_their_reason(mask: np.ndarray, reason: str) -> None:
    _, verdict = RULE.verdict(mask, 0.99)
    assert not verdict.passed and verdict.reasons[0].startswith(reason)


def test_a_rule_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="min_predicted_iou must be a number in"):
        KeepRule(min_predicted_iou=1.5)
    with pytest.raises(ValueError, match="area_range"):
        KeepRule(area_range=(0.5, 0.1))
