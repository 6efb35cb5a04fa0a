"""Boundary distances between two binary masks: HD95 and ASSD, in pixels or in mm (MONAI's conventions).

Definitions (those of MONAI's ``compute_hausdorff_distance`` and ``compute_average_surface_distance``, tested
against them):

- The boundary of a mask is its pixels that have a 4-neighbour outside the mask (or the image):
  ``mask & ~binary_erosion(mask, cross)``.
- The directed surface distances from A to B are, for every boundary pixel of A, the Euclidean distance
  (``distance_transform_edt`` with ``sampling=spacing``) to the nearest boundary pixel of B.
- HD95 is the larger of the two directed 95th percentiles (numpy's linear interpolation), A->B and B->A
  (:data:`HD95_CONVENTION`). medpy's ``hd95`` instead takes the 95th percentile of the pooled distances, which is
  never larger and was 5-11 % lower on HC18 cases.
- ASSD is the mean of the pooled distances A->B and B->A, i.e. ``(sum d(A->B) + sum d(B->A)) / (|dA| + |dB|)``
  (Heimann et al. 2009, MONAI's symmetric ASD). medpy's ``assd`` instead averages the two directed means;
  the two agree whenever both boundaries have the same number of pixels.

Both are nan when either mask is empty (no boundary, no distance).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fetalgen.metrics.overlap import mask_pair

Spacing = float | tuple[float, float]
_CROSS = ndi.generate_binary_structure(2, 1)
HD95_CONVENTION = "MONAI: the larger of the two directed 95th percentiles"  # written beside every HD95


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool HxW mask (pixels with a 4-neighbour outside it; image edges count as outside)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndi.binary_erosion(mask, structure=_CROSS, border_value=0)


def directed_distances(
    pred: np.ndarray, target: np.ndarray, spacing_mm: Spacing = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The directed surface distances ``(pred boundary -> target boundary, target boundary -> pred boundary)``.

    Args:
        pred, target: bool HxW masks, both non-empty.
        spacing_mm: pixel size, one float or ``(row, col)``; 1.0 gives pixels.

    Returns:
        float64 ``[|dP|]`` and ``[|dT|]`` distances.
    """
    pred, target = mask_pair(pred, target)
    if not pred.any() or not target.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = (float(spacing_mm),) * 2 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    bp, bt = boundary(pred), boundary(target)
    to_target = ndi.distance_transform_edt(~bt, sampling=sampling)
    to_pred = ndi.distance_transform_edt(~bp, sampling=sampling)
    return to_target[bp], to_pred[bt]


def surface_metrics(pred: np.ndarray, target: np.ndarray, spacing_mm: Spacing = 1.0) -> tuple[float, float]:
    """``(hd95, assd)`` from one pair of distance transforms; ``(nan, nan)`` if a mask is empty."""
    pred, target = mask_pair(pred, target)
    if not pred.any() or not target.any():
        return float("nan"), float("nan")
    forward, backward = directed_distances(pred, target, spacing_mm)
    hd = max(np.percentile(forward, 95), np.percentile(backward, 95))
    return float(hd), float(np.concatenate([forward, backward]).mean())


def hd95(pred: np.ndarray, target: np.ndarray, spacing_mm: Spacing = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance, MONAI's (pixels, or mm with ``spacing_mm``); nan if a mask
    is empty."""
    return surface_metrics(pred, target, spacing_mm)[0]


def assd(pred: np.ndarray, target: np.ndarray, spacing_mm: Spacing = 1.0) -> float:
    """Average symmetric surface distance, pooled (pixels, or mm with ``spacing_mm``); nan if a mask is empty."""
    return surface_metrics(pred, target, spacing_mm)[1]
