"""Head shapes drawn from the data: a Gaussian fitted to the ellipses of a generator's own training masks.

Each training mask gives its fitted ellipse (:func:`~fetalgen.metrics.biometry.fit_ellipse`) as six numbers: the
centre as fractions of the image side, the log semi-axes as fractions of the side, and the orientation as
``(cos 2θ, sin 2θ)`` (an ellipse turned by 180° is the same ellipse). Their joint distribution is a Gaussian: full
covariance when there are enough masks (more than twice the dimensions), else diagonal, always with a small ridge.
A drawn ellipse is rasterised as the training masks are (pixel centres inside it); draws whose head would leave the
image (its turned extent, with one pixel of slack), or whose semi-minor axis exceeds the semi-major, are drawn again.

The prior is plain data (:meth:`ShapePrior.to_dict`): it travels in the generator's checkpoint (its provenance) and
in the ``provenance.json`` of the sets sampled with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetalgen.metrics.biometry import Ellipse, ellipse_mask, fit_ellipse

FEATURES = ("cx", "cy", "log_a", "log_b", "cos2t", "sin2t")
RIDGE = 1e-4  # added to the covariance's diagonal (a few masks, or identical ones)
MAX_DRAWS = 1000


def ellipse_features(e: Ellipse, size: int) -> np.ndarray:
    """The six numbers of an ellipse at image side ``size`` (module doc)."""
    t = math.radians(2 * e.angle_deg)
    return np.array([e.cx / size, e.cy / size, math.log(e.semi_major / size), math.log(e.semi_minor / size),
                     math.cos(t), math.sin(t)])  # fmt: skip


def features_ellipse(f: np.ndarray, size: int) -> Ellipse:
    """The ellipse of six numbers (the inverse of :func:`ellipse_features`)."""
    angle = math.degrees(math.atan2(f[5], f[4]) / 2) % 180.0
    return Ellipse(f[0] * size, f[1] * size, math.exp(f[2]) * size, math.exp(f[3]) * size, angle)


@dataclass(frozen=True)
class ShapePrior:
    """A Gaussian over head ellipses (:data:`FEATURES`), fitted to ``n`` training masks."""

    mean: np.ndarray
    cov: np.ndarray
    n: int

    @classmethod
    def fit(cls, masks: np.ndarray | list[np.ndarray]) -> ShapePrior:
        """The prior of bool masks ``[N, S, S]`` (square; masks without an ellipse fit are left out).

        Raises:
            ValueError: fewer than 2 masks with a fitted ellipse.
        """
        rows = []
        for mask in masks:
            mask = np.asarray(mask, bool)
            e = fit_ellipse(mask)
            if e is not None:
                rows.append(ellipse_features(e, mask.shape[0]))
        if len(rows) < 2:
            raise ValueError(f"a shape prior needs at least 2 masks with a head ellipse, got {len(rows)}")
        x = np.stack(rows)
        full = len(rows) > 2 * len(FEATURES)
        cov = np.cov(x, rowvar=False) if full else np.diag(x.var(axis=0, ddof=1))
        return cls(x.mean(axis=0), cov + RIDGE * np.eye(len(FEATURES)), len(rows))

    def ellipse(self, rng: np.random.Generator, size: int) -> Ellipse:
        """One head ellipse at image side ``size``, inside the image (module doc)."""
        for _ in range(MAX_DRAWS):
            e = features_ellipse(rng.multivariate_normal(self.mean, self.cov), size)
            t = math.radians(e.angle_deg)  # the half extents of the turned ellipse along x and y
            dx = math.hypot(e.semi_major * math.cos(t), e.semi_minor * math.sin(t))
            dy = math.hypot(e.semi_major * math.sin(t), e.semi_minor * math.cos(t))
            inside = dx <= min(e.cx, size - 1 - e.cx) + 1 and dy <= min(e.cy, size - 1 - e.cy) + 1
            if e.semi_minor <= e.semi_major and inside:
                return e
        raise ValueError(f"no head ellipse inside a {size} px image in {MAX_DRAWS} draws: the prior is off")

    def mask(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A bool head mask ``[size, size]`` drawn from the prior. The fit runs through the boundary pixels'
        centres, half a pixel inside the region (``fetalgen.metrics.biometry``): the drawn ellipse is rasterised
        half a pixel larger, so that a mask's fit gives back the drawn ellipse, not one shrunk at every round."""
        e = self.ellipse(rng, size)
        return ellipse_mask(
            Ellipse(e.cx, e.cy, e.semi_major + 0.5, e.semi_minor + 0.5, e.angle_deg), (size, size)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gaussian", "features": list(FEATURES), "mean": self.mean.tolist(),
                "cov": self.cov.tolist(), "n": self.n}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapePrior:
        if data.get("features") != list(FEATURES):
            raise ValueError(f"a shape prior over {data.get('features')}, not {list(FEATURES)}")
        return cls(np.asarray(data["mean"], float), np.asarray(data["cov"], float), int(data["n"]))
