import numpy as np
import pytest

from fetalgen.segmentation.prompts import full_box, jittered_box, make_box, tight_box


def blob(shape=(100, 150)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[30:61, 40:91] = True  # rows 30..60, cols 40..90
    return m


def test_tight_box_is_inclusive_extent():
    box = tight_box(blob())
    assert box.dtype == np.float32 and box.shape == (4,)
    np.testing.assert_array_equal(box, [40, 30, 90, 60])
    with pytest.raises(ValueError, match="empty"):
        tight_box(np.zeros((5, 5), bool))


def test_full_box():
    np.testing.assert_array_equal(full_box((100, 150)), [0, 0, 149, 99])
    np.testing.assert_array_equal(make_box(blob(), "full", None), [0, 0, 149, 99])


def test_jittered_boxes_contain_tight_box_and_stay_inside():
    m = blob()
    tight = tight_box(m)
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = jittered_box(m, rng)
        assert box.dtype == np.float32
        assert (box[:2] <= tight[:2]).all() and (box[2:] >= tight[2:]).all()
        assert (box >= 0).all() and box[2] <= 149 and box[3] <= 99


def test_jitter_is_deterministic_per_seed():
    m = blob()
    a = [jittered_box(m, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    b = np.stack([jittered_box(m, np.random.default_rng(s)) for s in range(5)])
    assert len({tuple(r) for r in b}) > 1


@pytest.mark.parametrize("shape", [(256, 256), (512, 384), (128, 100)])
def test_max_shift_scales_with_resolution(shape):
    # A mask in the middle of the image, far enough from the edges that no box gets clipped.
    m = np.zeros(shape, bool)
    h, w = shape
    m[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5] = True
    s = max(shape)
    rng = np.random.default_rng(1)
    shifts = np.stack([np.abs(jittered_box(m, rng, max_jitter_px=20) - tight_box(m)) for _ in range(400)])
    assert shifts.max() == pytest.approx(20 * s / 256)
    assert shifts.min() == 0.0
    steps = shifts / (s / 256)  # integer shifts at the reference resolution
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)


def test_jitter_is_clipped_at_the_border():
    m = np.zeros((64, 64), bool)
    m[0:10, 54:64] = True
    box = jittered_box(m, np.random.default_rng(0), max_jitter_px=20, ref_size=64)
    assert box[1] == 0 and box[2] == 63


def test_make_box_modes():
    m = blob()
    np.testing.assert_array_equal(make_box(m, "tight", None), tight_box(m))
    np.testing.assert_array_equal(
        make_box(m, "jitter", np.random.default_rng(3), max_jitter_px=5),
        jittered_box(m, np.random.default_rng(3), max_jitter_px=5),
    )
    with pytest.raises(ValueError, match="jitter.*tight.*full"):
        make_box(m, "random", np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs an rng"):
        make_box(m, "jitter", None)
