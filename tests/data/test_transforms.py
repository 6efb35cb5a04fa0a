"""pad_resize and the none/weak/strong augmentations (image and mask move together)."""

from __future__ import annotations

import numpy as np
import pytest

from fetalgen.data.transforms import build_augmentation, pad_resize


def test_pad_resize_pads_bottom_right_and_reports_scale() -> None:
    image = np.full((50, 100), 200, np.uint8)
    mask = np.zeros((50, 100), bool)
    mask[10:30, 60:90] = True
    out_img, out_mask, scale = pad_resize(image, mask, 20)
    assert out_img.shape == out_mask.shape == (20, 20) and out_mask.dtype == bool
    assert scale == pytest.approx(5.0)  # 100 original px per 20 working px
    assert out_img[:10].min() == 200 and out_img[10:].max() == 0  # image on top, padding below
    assert out_mask.sum() == (20 * 30) / 25  # 4x6 working pixels, exact for aligned blocks
    assert out_mask[2:6, 12:18].all()


def test_pad_resize_tall_image_pads_right_and_upsamples() -> None:
    image = np.full((8, 4), 50, np.uint8)
    mask = np.ones((8, 4), bool)
    out_img, out_mask, scale = pad_resize(image, mask, 16)
    assert scale == pytest.approx(0.5)
    assert out_mask[:, :8].all() and not out_mask[:, 8:].any()
    with pytest.raises(ValueError, match="differ in size"):
        pad_resize(image, mask[:4], 16)


def test_none_and_unknown_strength() -> None:
    assert build_augmentation("none") is None
    with pytest.raises(ValueError, match="'heavy'.*valid: none, weak, strong"):
        build_augmentation("heavy")


def _asymmetric_pair(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((size, size), np.uint8)
    mask[10:30, 6:18] = 1  # left of centre
    image = (mask * 200 + 20).astype(np.uint8)
    return image, mask


@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_geometry_moves_image_and_mask_together(strength: str) -> None:
    image, mask = _asymmetric_pair()
    aug = build_augmentation(strength, seed=0)
    flipped = 0
    for _ in range(30):
        out = aug(image=image, mask=mask)
        img, msk = out["image"], out["mask"]
        assert img.shape == msk.shape == image.shape and set(np.unique(msk)) <= {0, 1}
        ys, xs = np.nonzero(msk)
        assert len(xs) > 0.7 * mask.sum()  # the region survives (dropout never touches the mask)
        bright_y, bright_x = np.nonzero(img > 110)
        # The bright square of the image and the mask stay on top of each other.
        assert abs(bright_x.mean() - xs.mean()) < 2.5 and abs(bright_y.mean() - ys.mean()) < 2.5
        flipped += xs.mean() > image.shape[1] / 2
    assert 5 < flipped < 25  # horizontal flip with p=0.5 happens, moving both


def test_same_seed_same_augmentation() -> None:
    image, mask = _asymmetric_pair()
    a = build_augmentation("strong", seed=7)
    b = build_augmentation("strong", seed=7)
    for _ in range(5):
        oa, ob = a(image=image, mask=mask), b(image=image, mask=mask)
        assert np.array_equal(oa["image"], ob["image"]) and np.array_equal(oa["mask"], ob["mask"])
