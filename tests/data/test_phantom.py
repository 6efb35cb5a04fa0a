"""Phantom generator: determinism, mask/HC consistency, layout on disk, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalgen.cli.phantom import main as phantom_main
from fetalgen.data.io import load_pair
from fetalgen.data.phantom import make_phantom, phantom_cases, write_phantom_dataset
from fetalgen.metrics.biometry import ellipse_circumference
from fetalgen.utils.seeds import derive_seed


def test_ramanujan_circle_and_flat_ellipse() -> None:
    assert ellipse_circumference(10, 10) == pytest.approx(2 * math.pi * 10)
    assert ellipse_circumference(1, 0) == pytest.approx(4.0, rel=1e-3)  # degenerate: 4a


def test_same_seed_same_phantom_other_seed_other() -> None:
    a, b, c = make_phantom(3, (135, 200)), make_phantom(3, (135, 200)), make_phantom(4, (135, 200))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.hc_mm == b.hc_mm and a.pixel_size_mm == b.pixel_size_mm
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(6))
def test_mask_matches_hc_and_lies_in_the_fan(seed: int) -> None:
    p = make_phantom(seed, (270, 400))
    assert p.image.dtype == np.uint8 and p.image.shape == (270, 400)
    assert p.mask.dtype == bool and p.mask.shape == (270, 400)
    cx, cy, a, b, _ = p.ellipse
    assert p.mask.sum() == pytest.approx(math.pi * a * b, rel=0.02)
    # An ellipse fitted to the mask boundary gives the stated HC.
    contours, _ = cv2.findContours(p.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (_, _), (d1, d2), _ = cv2.fitEllipse(max(contours, key=len))
    assert ellipse_circumference(d1 / 2, d2 / 2) * p.pixel_size_mm == pytest.approx(p.hc_mm, rel=0.02)
    # The head is inside the fan (no black, out-of-fan pixels under the mask), and away from the border.
    ys, xs = np.nonzero(p.mask)
    assert ys.min() > 0 and xs.min() > 0 and ys.max() < 269 and xs.max() < 399
    fan = cv2.morphologyEx((p.image > 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    assert fan[p.mask].mean() > 0.99
    # Looks like B-mode: black corners, a skull brighter than the brain inside it.
    assert p.image[0, 0] == 0 and p.image[0, -1] == 0
    ring = p.mask & ~cv2.erode(p.mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    core = cv2.erode(p.mask.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert p.image[ring].mean() > 1.3 * p.image[core].mean()
    assert 50 <= p.hc_mm <= 330 and p.pixel_size_mm > 0


def test_write_and_read_back(tmp_path: Path) -> None:
    written = write_phantom_dataset(tmp_path, n=3, seed=1, shape=(64, 96))
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f"phantom_000{i}.png" for i in range(3)
    ]
    assert (tmp_path / "heads.csv").read_text().startswith("filename,head circumference (mm)")
    read = phantom_cases(tmp_path, n=3, seed=1, shape=(64, 96))  # complete: read, not rewritten
    for w, r in zip(written, read, strict=True):
        assert (w.name, w.cohort) == (r.name, "phantom")
        assert r.hc_mm == pytest.approx(w.hc_mm, rel=1e-5) and r.pixel_size_mm == pytest.approx(
            w.pixel_size_mm
        )
    image, mask = load_pair(read[0])
    assert np.array_equal(image, make_phantom_image(1, 0, (64, 96)))
    assert mask.any()


def make_phantom_image(seed: int, index: int, shape: tuple[int, int]) -> np.ndarray:
    return make_phantom(derive_seed(seed, index), shape).image


def test_phantom_cases_rewrites_incomplete_or_different(tmp_path: Path) -> None:
    cases = phantom_cases(tmp_path, n=4, seed=0, shape=(64, 96))
    cases[2].image_path.unlink()
    again = phantom_cases(tmp_path, n=4, seed=0, shape=(64, 96))
    assert again[2].image_path.is_file() and len(again) == 4
    other = phantom_cases(tmp_path, n=2, seed=5, shape=(64, 96))
    assert len(other) == 2 and not (tmp_path / "images" / "phantom_0003.png").exists()
    assert np.array_equal(load_pair(other[0])[0], make_phantom_image(5, 0, (64, 96)))


def test_cli_writes_pairs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert phantom_main([f"out={tmp_path}", "n=2", "seed=3", "height=64", "width=96"]) == 0
    assert "wrote 2 phantom pairs" in capsys.readouterr().out
    assert len(list((tmp_path / "masks").glob("*.png"))) == 2
    with pytest.raises(SystemExit):
        phantom_main(["n=2"])  # out= missing
