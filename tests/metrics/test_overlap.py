import numpy as np
import pytest

from fetalgen.metrics.overlap import dice_score, iou_score


def squares() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True  # 16 px
    b[2:6, 2:6] = True  # 16 px, overlap a[2:4, 2:4] = 4 px, union 28 px
    return a, b


def test_dice_and_iou_of_overlapping_squares():
    a, b = squares()
    assert dice_score(a, b) == pytest.approx(2 * 4 / 32)
    assert iou_score(a, b) == pytest.approx(4 / 28)
    assert dice_score(b, a) == dice_score(a, b)


def test_identical_and_disjoint_masks():
    a, b = squares()
    assert dice_score(a, a) == 1.0 and iou_score(a, a) == 1.0
    c = np.zeros_like(a)
    c[6:8, 6:8] = True
    assert dice_score(a, c) == 0.0 and iou_score(a, c) == 0.0


def test_empty_masks():
    a, _ = squares()
    empty = np.zeros_like(a)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(a, empty) == 0.0 and iou_score(empty, a) == 0.0


def test_non_bool_input_and_shape_mismatch():
    a, b = squares()
    assert dice_score(a.astype(np.uint8) * 255, b) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_score(a, b[:4])
