"""Binary mask morphology shared by the data readers, the metrics and the diffusion post-processing.

Connectivity follows the usual digital-topology pairing: the foreground is 8-connected, holes (background)
are 4-connected.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a mask.

    Args:
        mask: HxW, anything castable to bool.

    Returns:
        bool HxW; all False when ``mask`` is empty. Ties keep the component found first (raster order).
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndi.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region not 4-connected to the image border. bool HxW.

    The result of ``scipy.ndimage.binary_fill_holes``, computed with an OpenCV flood fill (faster).
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    canvas = np.zeros((h + 2, w + 2), np.uint8)
    canvas[1:-1, 1:-1] = mask
    cv2.floodFill(canvas, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
    return canvas[1:-1, 1:-1] != 2
