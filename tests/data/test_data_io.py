"""load_image / load_mask / load_pair: conversions, outline filling and every bad-input case."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalgen.data.cases import Case, DataError
from fetalgen.data.io import fill_holes, load_image, load_mask, load_pair

SHAPE = (120, 160)


def _outline(shape=SHAPE, center=(80, 60), axes=(50, 35), angle=20.0, thickness=1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, center, axes, angle, 0, 360, 255, thickness=thickness)
    return m


def _write(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def test_load_image_converts_rgb_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200  # green (BGR order on disk does not matter for a pure channel test)
    img = load_image(_write(tmp_path / "a.png", rgb))
    assert img.shape == (10, 12) and img.dtype == np.uint8
    assert int(img[0, 0]) == int(round(0.587 * 200))


def test_load_image_corrupt_and_missing_name_the_file(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.png", np.full((20, 20), 9, np.uint8))
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(good.read_bytes()[:30])  # truncated PNG
    with pytest.raises(DataError, match="corrupt.png.*unreadable or corrupt"):
        load_image(bad)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="text.png"):
        load_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="nothere.png.*missing"):
        load_image(tmp_path / "nothere.png")


def test_closed_outline_is_filled_to_ellipse_area(tmp_path: Path) -> None:
    a, b = 50, 35
    path = _write(tmp_path / "outline.png", cv2.cvtColor(_outline(axes=(a, b)), cv2.COLOR_GRAY2BGR))
    mask = load_mask(path, SHAPE)
    assert mask.dtype == bool and mask.shape == SHAPE
    # A 1-px outline filled (outline included): area between pi*a*b and pi*(a+1)*(b+1).
    area = mask.sum()
    assert math.pi * a * b * 0.98 < area < math.pi * (a + 1) * (b + 1) * 1.02
    assert mask[60, 80] and not mask[0, 0]


def test_open_outline_leaving_the_image_is_completed_by_an_ellipse_fit(tmp_path: Path) -> None:
    a, b = 50, 35
    outline = _outline(center=(80, 100), axes=(a, b), angle=0.0)  # bottom part leaves the 120-row image
    assert fill_holes(outline > 0).sum() == (outline > 0).sum()  # really not closed
    mask = load_mask(_write(tmp_path / "open.png", outline), SHAPE)
    truth = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(truth, (80, 100), (a, b), 0, 0, 360, 1, thickness=-1)
    inter, union = (mask & (truth > 0)).sum(), (mask | (truth > 0)).sum()
    assert inter / union > 0.95


def test_filled_mask_is_kept(tmp_path: Path) -> None:
    filled = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(filled, (80, 60), (40, 30), 0, 0, 360, 1, thickness=-1)  # 0/1 levels
    mask = load_mask(_write(tmp_path / "filled.png", filled), SHAPE)
    assert np.array_equal(mask, filled > 0)


def test_mask_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="size.png.*differs from its image size"):
        load_mask(_write(tmp_path / "size.png", _outline(shape=(100, 160))), SHAPE)
    with pytest.raises(DataError, match="empty.png.*empty"):
        load_mask(_write(tmp_path / "empty.png", np.zeros(SHAPE, np.uint8)), SHAPE)
    full = np.full(SHAPE, 255, np.uint8)
    with pytest.raises(DataError, match="full.png.*whole image"):
        load_mask(_write(tmp_path / "full.png", full), SHAPE)
    for inverted in (255 - _outline(thickness=-1), 255 - _outline()):  # a filled head or an outline, inverted
        with pytest.raises(
            DataError, match="inverted.png.*an inverted mask"
        ):  # was trained on as the whole image
            load_mask(_write(tmp_path / "inverted.png", inverted), SHAPE)
    jpegish = _outline(thickness=-1)
    jpegish[0, 0], jpegish[0, 1] = 3, 250  # compression artefacts
    with pytest.raises(DataError, match=r"jpegish.png.*not binary: 4 grey levels found \(0, 3, 250, 255\)"):
        load_mask(_write(tmp_path / "jpegish.png", jpegish), SHAPE)
    with pytest.raises(DataError, match="gone.png.*missing"):
        load_mask(tmp_path / "gone.png", SHAPE)


def test_load_pair_checks_mask_against_image(tmp_path: Path) -> None:
    img = _write(tmp_path / "img.png", np.full(SHAPE, 80, np.uint8))
    msk = _write(tmp_path / "img_Annotation.png", _outline())
    case = Case("img", img, msk, subject="img")
    image, mask = load_pair(case)
    assert image.shape == mask.shape == SHAPE and mask.any()
    small = _write(tmp_path / "small.png", _outline(shape=(60, 80), center=(40, 30), axes=(20, 10)))
    with pytest.raises(DataError, match="small.png"):
        load_pair(Case("img", img, small, subject="img"))


def test_16_bit_files_are_scaled_by_the_bit_depth_they_use(tmp_path: Path) -> None:
    ramp = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)
    as_8_bit = load_image(_write(tmp_path / "eight_in_sixteen.png", ramp))  # 0..255 stored in 16 bits
    assert as_8_bit.dtype == np.uint8 and as_8_bit.max() == 255 and (as_8_bit == ramp).all()
    twelve = load_image(_write(tmp_path / "twelve.png", ramp * 16 + 15))  # 12-bit data, max 4095
    assert twelve.max() == 255 and twelve.min() == 1
    full = load_image(_write(tmp_path / "sixteen.png", ramp * 257))  # the whole 16-bit range
    assert (full == ramp).all()
    mask = _outline(thickness=-1).astype(np.uint16) // 255  # a 16-bit 0/1 mask
    assert load_mask(_write(tmp_path / "mask16.png", mask), SHAPE).sum() == mask.sum()


def test_a_mask_of_two_regions_is_refused_or_cut_to_the_largest(tmp_path: Path) -> None:
    two = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(two, (50, 60), (30, 20), 0, 0, 360, 255, -1)  # the head
    cv2.circle(two, (140, 20), 6, 255, -1)  # a second blob
    path = _write(tmp_path / "two.png", two)
    with pytest.raises(DataError, match="two.png: mask has 2 separate regions"):
        load_mask(path, SHAPE)
    repaired: list[Path] = []
    kept = load_mask(path, SHAPE, regions="largest", repaired=repaired)
    assert repaired == [path] and not kept[20, 140] and kept[60, 50]
    assert kept.sum() == pytest.approx(math.pi * 30 * 20, rel=0.05)


def test_pair_dataset_counts_the_masks_it_cut(tmp_path: Path) -> None:
    from fetalgen.data.dataset import PairDataset

    image = _write(tmp_path / "img.png", np.full(SHAPE, 80, np.uint8))
    two = _outline(thickness=-1)
    cv2.circle(two, (150, 10), 5, 255, -1)
    case = Case("c", image, _write(tmp_path / "m.png", two), "s")
    with pytest.warns(UserWarning, match="1 mask\\(s\\) had several regions; kept the largest"):
        data = PairDataset([case], 32, mask_regions="largest")
    assert len(data) == 1 and data.repaired == [case.mask_path]


def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path: Path) -> None:
    from PIL import Image

    from fetalgen.data.io import load_image

    path = tmp_path / "bomb.png"
    Image.new("L", (10_000, 6_000)).save(path)  # 60 M pixels in a small file
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError, match="bomb.png.*10000 x 6000 pixels exceeds the 50,000,000-pixel limit"):
        load_image(path)
