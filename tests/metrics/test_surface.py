import math

import numpy as np
import pytest

from fetalgen.metrics.surface import assd, boundary, hd95


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
