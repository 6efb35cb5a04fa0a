"""Mask morphology: largest component (8-connected) and hole filling (4-connected background)."""

import numpy as np
from scipy import ndimage as ndi

from fetalgen.utils.masks import fill_holes, largest_component


def test_largest_component_and_fill_holes():
    m = np.zeros((10, 10), bool)
    m[0:3, 0:3] = True
    m[5:9, 5:9] = True
    m[6:8, 6:8] = False
    big = largest_component(m)
    assert big.sum() == 12 and not big[0, 0]
    assert fill_holes(big).sum() == 16
    diagonal = np.eye(5, dtype=bool)  # 8-connected: one component
    np.testing.assert_array_equal(largest_component(diagonal), diagonal)


def test_fill_holes_equals_scipy_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((24, 31)) > 0.45
        np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
