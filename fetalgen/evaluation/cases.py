"""The metrics of one predicted head mask against the true one: overlap, surface distances, head circumference."""

from __future__ import annotations

import math

import numpy as np

from fetalgen.metrics.biometry import measure_head
from fetalgen.metrics.overlap import dice_score, iou_score
from fetalgen.metrics.surface import surface_metrics


def case_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    pixel_size_mm: float = math.nan,
    hc_true_px: float | None = None,
    hc_csv_mm: float = math.nan,
) -> dict[str, float]:
    """Metrics of one predicted bool HxW mask against the true one.

    Args:
        pred, target: bool HxW masks.
        pixel_size_mm: pixel size at this resolution (nan: unknown, the mm columns are nan).
        hc_true_px: HC of the ellipse fitted to ``target`` in pixels (computed if None).
        hc_csv_mm: the dataset's reference HC (nan: unknown).

    Returns:
        ``dice, iou, hd95_px, assd_px, hd95_mm, assd_mm, hc_pred_px, hc_true_px, hc_abs_err_px, hc_pred_mm,
        hc_true_mm, hc_abs_err_mm, hc_err_mm (signed, predicted minus true), hc_abs_err_csv_mm``; surface distances are nan for an empty prediction,
        HC values nan when no ellipse fits.
    """
    if hc_true_px is None:
        hc_true_px = hc_px(target)
    hd, sd = surface_metrics(pred, target)
    hc_pred_px = hc_px(pred)
    ps = float(pixel_size_mm)
    return {
        "dice": dice_score(pred, target),
        "iou": iou_score(pred, target),
        "hd95_px": hd,
        "assd_px": sd,
        "hd95_mm": hd * ps,  # isotropic pixels: distances scale with the pixel size
        "assd_mm": sd * ps,
        "hc_pred_px": hc_pred_px,
        "hc_true_px": hc_true_px,
        "hc_abs_err_px": abs(hc_pred_px - hc_true_px),
        "hc_pred_mm": hc_pred_px * ps,
        "hc_true_mm": hc_true_px * ps,
        "hc_abs_err_mm": abs(hc_pred_px - hc_true_px) * ps,
        "hc_err_mm": (hc_pred_px - hc_true_px) * ps,  # signed: its mean is the bias
        "hc_abs_err_csv_mm": abs(hc_pred_px * ps - float(hc_csv_mm)),
    }


def hc_px(mask: np.ndarray) -> float:
    bio = measure_head(mask)
    return math.nan if bio is None else bio.hc
