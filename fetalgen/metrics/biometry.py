"""Head biometry from a mask: fitted ellipse -> head circumference (HC), BPD and OFD.

Convention: the ellipse is fitted (``cv2.fitEllipse``, least squares) to the centres of the outer boundary
pixels of the mask's largest 8-connected component (``cv2.findContours``, every contour point). For a mask
made by filling a drawn outline, as HC18's, that is the outline itself. A region's edge lies half a pixel
beyond its boundary pixel centres and no correction is applied, so the result depends on how a mask was
rasterised: for the pixels whose centres lie inside an ellipse, the fit is ~0.45 px inside that ellipse; the
filled HC18 annotations sit ~0.94 px outside their reference ellipse, so the fit over-reads the CSV HC by
~0.8 mm on average (experiments/bench/biometry_hc18.py); growing the fit by 0.5 px would double that.

Coordinates: x = column, y = row (y down); ``angle_deg`` is the direction of the major axis, from the x axis
towards y, in [0, 180).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from fetalgen.utils.masks import largest_component


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in pixel coordinates: centre (cx, cy), semi-axes (semi_major >= semi_minor), angle in degrees."""

    cx: float
    cy: float
    semi_major: float
    semi_minor: float
    angle_deg: float


@dataclass(frozen=True)
class Biometry:
    """Head measurements, in mm (or pixels when the pixel size is 1).

    Attributes:
        hc: head circumference, Ramanujan circumference of the fitted ellipse.
        bpd: biparietal diameter, the minor axis (2 * semi_minor).
        ofd: occipitofrontal diameter, the major axis (2 * semi_major).
    """

    hc: float
    bpd: float
    ofd: float


def ellipse_circumference(a: float, b: float) -> float:
    """Circumference of an ellipse with semi-axes ``a``, ``b`` (Ramanujan's second approximation).

    ``pi (a+b) (1 + 3h / (10 + sqrt(4 - 3h)))`` with ``h = ((a-b)/(a+b))^2``; exactly ``2 pi r`` for a circle.
    """
    if a + b <= 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


def fit_ellipse(mask: np.ndarray) -> Ellipse | None:
    """Least-squares ellipse through the outer boundary pixel centres of the largest component.

    Args:
        mask: bool HxW.

    Returns:
        The ellipse, or None when the mask is empty, its boundary has fewer than 5 points, or the fit is
        degenerate (not finite, or a minor semi-axis under half a pixel, e.g. a one-pixel line).
    """
    blob = largest_component(mask)
    if not blob.any():
        return None
    contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len)
    if len(points) < 5:
        return None
    # OpenCV perturbs near-degenerate point sets with its global random generator: reseed it so the fit depends
    # on the mask alone, not on the fits that ran before it in this process (the generator is per thread).
    cv2.setRNGSeed(0)
    (cx, cy), (w, h), angle = cv2.fitEllipse(points)
    if not all(math.isfinite(v) for v in (cx, cy, w, h, angle)) or min(w, h) < 1.0:
        return None  # no area: the boundary points lie on a line (a one-pixel-thin mask)
    if w < h:
        w, h, angle = h, w, angle + 90.0
    return Ellipse(float(cx), float(cy), float(w) / 2, float(h) / 2, float(angle) % 180.0)


def ellipse_mask(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Filled ellipse as a bool mask of ``shape`` (H, W): pixels whose centre lies inside or on it."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    t = math.radians(ellipse.angle_deg)
    dx, dy = cols - ellipse.cx, rows - ellipse.cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    a, b = max(ellipse.semi_major, 1e-9), max(ellipse.semi_minor, 1e-9)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def fitted_ellipse_mask(mask: np.ndarray) -> np.ndarray:
    """The filled ellipse fitted to ``mask`` (bool HxW; :func:`fit_ellipse`), empty where no ellipse fits.

    A head annotation is an ellipse (HC18's masks are drawn ones), so a segmentation read as its fitted ellipse is
    the shape the HC is measured on. The fit runs through the boundary pixels' centres, half a pixel inside the
    region's edge, so the ellipse is drawn half a pixel larger: an elliptic mask comes back as itself.
    """
    e = fit_ellipse(mask)
    if e is None:
        return np.zeros(mask.shape, dtype=bool)
    return ellipse_mask(replace(e, semi_major=e.semi_major + 0.5, semi_minor=e.semi_minor + 0.5), mask.shape)


def measure_head(mask: np.ndarray, pixel_size_mm: float = 1.0) -> Biometry | None:
    """HC, BPD and OFD of the ellipse fitted to ``mask`` (bool HxW), in mm given the pixel size; None if no fit."""
    e = fit_ellipse(mask)
    if e is None:
        return None
    return Biometry(
        hc=ellipse_circumference(e.semi_major, e.semi_minor) * pixel_size_mm,
        bpd=2.0 * e.semi_minor * pixel_size_mm,
        ofd=2.0 * e.semi_major * pixel_size_mm,
    )
