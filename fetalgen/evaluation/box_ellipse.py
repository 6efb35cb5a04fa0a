"""The trivial baseline: predict the ellipse inscribed in the box prompt.

A fetal head is close to an ellipse, so a box prompt alone already gives a good mask. Every SAM result is
reported beside this baseline, evaluated on exactly the same boxes.
"""

from __future__ import annotations

import numpy as np


def box_ellipse_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Axis-aligned filled ellipse inscribed in an XYXY box.

    The box is inclusive of the mask extent (``fetalgen.segmentation.prompts``): it covers pixels ``x0..x1``,
    so the ellipse has centre ``((x0+x1)/2, (y0+y1)/2)`` and semi-axes ``(x1-x0+1)/2``, ``(y1-y0+1)/2`` and
    touches the outer edges of the box's extreme pixels.

    Args:
        box: [4] ``(x0, y0, x1, y1)`` in pixel coordinates (floats allowed).
        shape: ``(H, W)`` of the output.

    Returns:
        bool HxW, pixels whose centre lies inside the ellipse (all False for a box with x1 < x0 or y1 < y0).
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    a, b = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    if a <= 0 or b <= 0:
        return np.zeros(shape[:2], dtype=bool)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return ((cols - (x0 + x1) / 2) / a) ** 2 + ((rows - (y0 + y1) / 2) / b) ** 2 <= 1.0
