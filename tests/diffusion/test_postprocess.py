import numpy as np
import pytest

from fetalgen.diffusion.postprocess import clean_mask


def head_channel() -> np.ndarray:
    """A [-1, 1] channel: a 20x20 head with a 4x4 hole, and a 2x2 speck elsewhere."""
    ch = -np.ones((40, 40), np.float32)
    ch[10:30, 10:30] = 0.8
    ch[18:22, 18:22] = -0.5  # hole
    ch[2:4, 35:37] = 0.9  # speck
    return ch


def test_clean_mask_removes_speck_and_fills_hole():
    m = clean_mask(head_channel())
    assert m.dtype == bool
    expected = np.zeros((40, 40), bool)
    expected[10:30, 10:30] = True
    np.testing.assert_array_equal(m, expected)


def test_threshold():
    ch = head_channel()
    ch[10:30, 10:30] = 0.3
    ch[18:22, 18:22] = 0.3
    assert clean_mask(ch, threshold=0.5).sum() == 4  # only the speck is above 0.5
    assert clean_mask(ch, threshold=0.0).sum() == 400


def test_empty_stays_empty():
    m = clean_mask(-np.ones((16, 16), np.float32))
    assert m.shape == (16, 16) and not m.any()
    with pytest.raises(ValueError, match="HxW"):
        clean_mask(np.zeros((1, 16, 16)))
