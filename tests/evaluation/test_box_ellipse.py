import cv2
import numpy as np

from fetalgen.evaluation.box_ellipse import box_ellipse_mask
from fetalgen.metrics.overlap import dice_score
from fetalgen.segmentation.prompts import tight_box


def test_tight_box_of_a_drawn_ellipse():
    m = np.zeros((128, 160), np.uint8)
    cv2.ellipse(m, (80, 64), (50, 30), 0, 0, 360, 1, thickness=-1)
    m = m.astype(bool)
    pred = box_ellipse_mask(tight_box(m), m.shape)
    assert pred.shape == m.shape and pred.dtype == bool
    assert dice_score(pred, m) > 0.97


def test_inscribed_in_the_box():
    box = np.array([10, 20, 30, 30], np.float32)  # 21 x 11 pixels
    pred = box_ellipse_mask(box, (40, 50))
    np.testing.assert_array_equal(tight_box(pred), box)  # touches all four sides, never leaves the box
    assert pred[25, 20] and not pred[20, 10] and not pred[30, 30]  # centre in, corners out


def test_one_pixel_and_degenerate_boxes():
    one = box_ellipse_mask(np.array([3, 4, 3, 4]), (8, 8))
    assert one.sum() == 1 and one[4, 3]
    assert not box_ellipse_mask(np.array([5, 5, 4, 6]), (8, 8)).any()
