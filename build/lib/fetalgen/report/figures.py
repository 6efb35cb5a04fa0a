"""Pictures of image/mask pairs: contours drawn over images, grids of pairs (pure numpy + OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np

CONTOUR_RGB = (255, 64, 64)


def overlay_contour(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = CONTOUR_RGB
) -> np.ndarray:
    """The mask's outer contour drawn in colour over a grayscale image.

    Args:
        image: uint8 HxW.
        mask: bool HxW.
        color: RGB of the contour.

    Returns:
        uint8 HxWx3 RGB.
    """
    rgb = np.repeat(image[..., None], 3, axis=2).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, color, thickness=1)
    return rgb


def pair_grid(
    images: np.ndarray, masks: np.ndarray, ncols: int | None = None, min_tile: int = 128
) -> np.ndarray:
    """A grid of pairs, each shown as ``image | image with the mask contour``.

    Args:
        images: float [N,H,W] in [0, 1].
        masks: bool [N,H,W].
        ncols: pairs per row (default: about sqrt(N)).
        min_tile: small images are enlarged (nearest neighbour, integer factor) to at least this side.

    Returns:
        uint8 RGB image [rows * (s*H + 2), ncols * 2 * (s*W + 2), 3] on a black background (2-px gaps).
    """
    n, h, w = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    scale = max(1, math.ceil(min_tile / max(h, w)))
    th, tw = h * scale + 2, w * scale + 2
    grid = np.zeros((nrows * th, ncols * 2 * tw, 3), dtype=np.uint8)
    for i in range(n):
        image = np.round(np.clip(images[i], 0, 1) * 255).astype(np.uint8)
        image = cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        mask = (
            cv2.resize(masks[i].astype(np.uint8), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) > 0
        )
        r, c = divmod(i, ncols)
        y, x = r * th + 1, c * 2 * tw + 1
        grid[y : y + h * scale, x : x + w * scale] = image[..., None]
        grid[y : y + h * scale, x + tw : x + tw + w * scale] = overlay_contour(image, mask)
    return grid
