"""Region overlap between two binary masks: Dice and IoU (Jaccard)."""

from __future__ import annotations

import numpy as np


def mask_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of one shape (``ValueError`` if the shapes differ)."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: pred {pred.shape} vs target {target.shape}")
    return pred, target


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient ``2|P∩T| / (|P|+|T|)`` of two bool HxW masks.

    Returns:
        float in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    pred, target = mask_pair(pred, target)
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, target).sum()) / total


def iou_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union ``|P∩T| / |P∪T|`` of two bool HxW masks.

    Returns:
        float in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    pred, target = mask_pair(pred, target)
    union = int(np.logical_or(pred, target).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, target).sum()) / union
