import math

import numpy as np
import pytest

from fetalgen.metrics.surface import assd, boundary, directed_distances, hd95


def square(n: int = 10, shift: int = 0, shape: tuple[int, int] = (20, 24)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[5 : 5 + n, 5 + shift : 5 + n + shift] = True
    return m


def test_boundary_is_the_one_pixel_ring():
    ring = boundary(square(4))
    assert ring.sum() == 12  # 4x4 square: 16 px, 2x2 inside
    assert not ring[6:8, 6:8].any()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_square_hd95_equals_shift(k):
    assert hd95(square(), square(shift=k)) == pytest.approx(k)


def test_shifted_square_assd_by_hand():
    # 10x10 square vs the same shifted right by 2 px; ring of 36 px each, distances A->B (B->A is symmetric):
    # left column 10 px at 2; top and bottom rows 1 px at 1 each; right column min(2, j, 9-j) = 14 in total.
    # Sum 20 + 2 + 14 = 36 over 36 px -> 1.0.
    assert assd(square(), square(shift=2)) == pytest.approx(1.0)


def test_nested_squares_pooled_definitions():
    # 3x3 inside a concentric 5x5: inner ring 8 px all at 1; outer ring 16 px, 12 at 1 and 4 corners at sqrt(2).
    inner, outer = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    inner[3:6, 3:6] = True
    outer[2:7, 2:7] = True
    assert assd(inner, outer) == pytest.approx((20 + 4 * math.sqrt(2)) / 24)  # pooled mean
    assert hd95(inner, outer) == pytest.approx(math.sqrt(2))  # 95th pct of 20 ones and 4 sqrt(2)s


def test_spacing_scales_distances():
    a, b = square(), square(shift=2)
    assert hd95(a, b, spacing_mm=0.5) == pytest.approx(1.0)
    assert assd(a, b, spacing_mm=0.5) == pytest.approx(0.5)
    # (row, col) spacing: the shift is along columns, so only the column spacing matters for HD95.
    assert hd95(a, b, spacing_mm=(3.0, 0.25)) == pytest.approx(0.5)


def test_identical_and_empty():
    a = square()
    assert hd95(a, a) == 0.0 and assd(a, a) == 0.0
    empty = np.zeros_like(a)
    assert math.isnan(hd95(a, empty)) and math.isnan(assd(empty, a)) and math.isnan(hd95(empty, empty))


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    # A 10x10 square inside a 16x16 one (3 px apart): the inner ring's 36 px all lie 3 px from the outer ring;
    # the outer ring's 60 px lie 3 px (straight) to 3*sqrt(2) px (corners) from the inner one. The pooled 95th
    # percentile is pulled down by the 36 inner distances; MONAI's HD95 is the outer ring's own 95th percentile.
    inner, outer = np.zeros((24, 24), bool), np.zeros((24, 24), bool)
    inner[7:17, 7:17] = True
    outer[4:20, 4:20] = True
    forward, backward = directed_distances(outer, inner)
    assert hd95(outer, inner) == pytest.approx(np.percentile(forward, 95))
    assert hd95(outer, inner) > np.percentile(np.concatenate([forward, backward]), 95)
    assert hd95(outer, inner) == hd95(inner, outer)


def ellipse(shape, centre, axes, angle):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    y, x = rows - centre[0], cols - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    return ((x * c + y * s) / axes[0]) ** 2 + ((-x * s + y * c) / axes[1]) ** 2 <= 1


@pytest.mark.parametrize("case", range(6))
def test_hd95_and_assd_equal_monai(case):
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(case)
    shape = (96, 128)
    target = ellipse(shape, (48, 64), (40, 28), 0.3)
    pred = ellipse(shape, (48 + rng.integers(-6, 7), 64 + rng.integers(-6, 7)),
                   (40 + rng.integers(-8, 9), 28 + rng.integers(-6, 7)), rng.uniform(0, math.pi))  # fmt: skip
    spacing = float(rng.uniform(0.1, 0.3))
    as_tensor = [torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, target)]
    theirs_hd = monai_metrics.compute_hausdorff_distance(*as_tensor, percentile=95, spacing=spacing).item()
    theirs_sd = monai_metrics.compute_average_surface_distance(
        *as_tensor, symmetric=True, spacing=spacing
    ).item()
    assert hd95(pred, target, spacing_mm=spacing) == pytest.approx(theirs_hd, rel=1e-6)
    assert assd(pred, target, spacing_mm=spacing) == pytest.approx(theirs_sd, rel=1e-6)
