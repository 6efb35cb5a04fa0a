"""Pair grids and contour overlays: sizes, placement and colours checked pixel by pixel."""

from __future__ import annotations

import numpy as np

from fetalgen.report.figures import CONTOUR_RGB, overlay_contour, pair_grid


def test_overlay_contour_draws_only_the_outline() -> None:
    image = np.full((9, 9), 100, np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    rgb = overlay_contour(image, mask)
    assert rgb.shape == (9, 9, 3)
    outline = np.all(rgb == CONTOUR_RGB, axis=2)
    assert outline[2, 2:7].all() and outline[6, 2:7].all() and outline[2:7, 2].all()
    assert not outline[3:6, 3:6].any()  # the inside keeps the image
    assert (rgb[~outline] == 100).all()


def test_pair_grid_layout_and_scaling() -> None:
    images = np.stack([np.full((4, 4), v) for v in (0.0, 0.5, 1.0)])
    masks = np.zeros((3, 4, 4), bool)
    grid = pair_grid(images, masks, ncols=2, min_tile=8)  # 4 px tiles enlarged x2, 2-px gaps
    assert grid.shape == (2 * 10, 2 * 2 * 10, 3)
    assert (grid[1:9, 1:9] == 0).all()  # pair 0 image (black)
    assert (grid[1:9, 21:29] == 128).all()  # pair 1 image (0.5 -> 128)
    assert (grid[11:19, 1:9] == 255).all()  # pair 2, second row
    assert (grid[11:19, 21:] == 0).all()  # no fourth pair
