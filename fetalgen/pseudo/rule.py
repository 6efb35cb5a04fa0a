"""Which pseudo-labels are kept: one stated rule over SAM's own confidence and the mask's shape."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fetalgen.metrics.synthesis import QCResult, qc_mask
from fetalgen.utils.masks import fill_holes, largest_component


@dataclass(frozen=True)
class KeepRule:
    """Keep a pseudo-label when SAM's predicted IoU and the mask's head shape both pass.

    The mask is first cleaned as a head is (its largest region, holes filled); then the synthetic pairs' own
    mask check (:func:`~fetalgen.metrics.synthesis.qc_mask`: ellipse fit, area) and SAM's predicted IoU judge it.

    Attributes:
        min_predicted_iou: smallest accepted IoU that SAM's IoU head predicts for the mask; None: not consulted
            (a random-init model's head predicts nothing meaningful).
        min_ellipse_iou: smallest accepted IoU between the cleaned mask and its fitted ellipse.
        area_range: accepted ``(min, max)`` mask area as a fraction of the working image.
    """

    min_predicted_iou: float | None = 0.9
    min_ellipse_iou: float = 0.9
    area_range: tuple[float, float] = (0.01, 0.7)

    def __post_init__(self) -> None:
        for name in ("min_predicted_iou", "min_ellipse_iou"):
            value = getattr(self, name)
            if value is None and name == "min_predicted_iou":
                continue
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"keep.{name} must be a number in [0, 1], got {value!r}")
        low, high = (float(v) for v in self.area_range)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(
                f"keep.area_range must be (min, max) with 0 <= min < max <= 1, got {self.area_range}"
            )
        object.__setattr__(self, "area_range", (low, high))

    def verdict(self, mask: np.ndarray, predicted_iou: float) -> tuple[np.ndarray, QCResult]:
        """The cleaned mask and whether it is kept (with the figures and every reason it is not)."""
        cleaned = fill_holes(largest_component(mask)) if np.any(mask) else np.asarray(mask, dtype=bool)
        qc = qc_mask(cleaned, self.min_ellipse_iou, self.area_range)
        reasons = list(qc.reasons)
        wanted = self.min_predicted_iou
        if wanted is not None and not (math.isfinite(predicted_iou) and predicted_iou >= wanted):
            reasons.append(f"predicted_iou: {predicted_iou:.3f} < {wanted}")
        return cleaned, replace(qc, passed=not reasons, reasons=reasons)
