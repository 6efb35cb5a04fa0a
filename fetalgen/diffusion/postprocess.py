"""Turn a decoded mask channel into a clean binary head mask: threshold, largest component, no holes.

Pure numpy/scipy; no torch or Lightning. Connectivity follows the usual digital-topology pairing: the
foreground is 8-connected, holes (background) are 4-connected.
"""

from __future__ import annotations

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
    """Fill every background region not connected (4-connectivity) to the image border. bool HxW."""
    return ndi.binary_fill_holes(np.asarray(mask, dtype=bool))


def clean_mask(channel: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Binarise a decoded mask channel and keep one solid blob.

    Args:
        channel: float HxW in [-1, 1] (the diffusion model's mask channel); a CPU tensor also works.
        threshold: pixels strictly above it are foreground.

    Returns:
        bool HxW: the largest connected component of ``channel > threshold`` with its holes filled;
        all False when nothing is above the threshold.
    """
    channel = np.asarray(channel, dtype=np.float32)
    if channel.ndim != 2:
        raise ValueError(f"clean_mask expects an HxW channel, got shape {channel.shape}")
    return fill_holes(largest_component(channel > threshold))
