"""Turn a decoded mask channel into a clean binary head mask: threshold, largest component, no holes.

Pure numpy; no torch or Lightning. The morphology lives in :mod:`fetalgen.utils.masks`.
"""

from __future__ import annotations

import numpy as np

from fetalgen.utils.masks import fill_holes, largest_component


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
