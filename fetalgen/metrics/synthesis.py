"""Quality control and dataset-level metrics for synthetic (image, mask) pairs.

- :func:`qc_mask`: is a generated mask a plausible head? (ellipse-like, sensible size, optionally away from
  the image border). Failed pairs are kept and marked, never dropped silently.
- :func:`max_similarity`: memorisation check, each synthetic image's highest normalised cross-correlation
  with any training image at low resolution.
- :func:`summarise_synthetic` / :func:`format_summary`: a JSON-able summary of a synthetic set and a table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import stats

from fetalgen.metrics.biometry import ellipse_mask, fit_ellipse
from fetalgen.metrics.overlap import iou_score


@dataclass
class QCResult:
    """QC verdict for one mask.

    Attributes:
        passed: every check passed.
        ellipse_iou: IoU between the mask and its fitted filled ellipse (0.0 when no ellipse fits).
        area_frac: mask area / image area.
        centroid: ``(x, y)`` of the mask centroid as fractions of the image width and height; None if empty.
        reasons: one line per failed check, each starting with the check's name
            (``empty``, ``ellipse_iou``, ``area_frac``, ``border``).
    """

    passed: bool
    ellipse_iou: float
    area_frac: float
    centroid: tuple[float, float] | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the manifest's ``qc`` field)."""
        d = asdict(self)
        d["centroid"] = None if self.centroid is None else list(self.centroid)
        return d


def ellipse_fit_iou(mask: np.ndarray) -> float:
    """IoU between a bool HxW mask and the filled ellipse fitted to it; 0.0 when no ellipse fits.

    The fitted ellipse runs through the centres of the mask's boundary pixels, so the region it stands for
    reaches half a pixel further: it is rasterised with both semi-axes grown by 0.5 px. Without that, a
    perfectly elliptical mask of radius 10 px would score only ~0.9 (and small masks would fail QC for their
    size); with it, drawn ellipses score ~0.97-1.0 at any size.
    """
    mask = np.asarray(mask, dtype=bool)
    e = fit_ellipse(mask)
    if e is None:
        return 0.0
    grown = replace(e, semi_major=e.semi_major + 0.5, semi_minor=e.semi_minor + 0.5)
    return iou_score(mask, ellipse_mask(grown, mask.shape))


def qc_mask(
    mask: np.ndarray,
    min_ellipse_iou: float = 0.85,
    area_range: tuple[float, float] = (0.01, 0.7),
    border_margin: float = 0.0,
) -> QCResult:
    """Check that a mask looks like a fetal head.

    Args:
        mask: bool HxW.
        min_ellipse_iou: smallest accepted IoU between the mask and its fitted ellipse.
        area_range: accepted ``(min, max)`` mask area as a fraction of the image.
        border_margin: fraction of the image side; when > 0, the mask's extent must stay at least this far
            from every image edge (so its centroid does too). 0 disables the check.

    Returns:
        The verdict with its figures and the reasons for failure.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    area_frac = float(mask.mean())
    if area_frac == 0.0:
        return QCResult(False, 0.0, 0.0, None, ["empty: the mask has no pixels"])
    rows, cols = np.nonzero(mask)
    centroid = (float(cols.mean() + 0.5) / w, float(rows.mean() + 0.5) / h)
    iou = ellipse_fit_iou(mask)
    reasons = []
    if iou < min_ellipse_iou:
        reasons.append(f"ellipse_iou: {iou:.3f} < {min_ellipse_iou}")
    lo, hi = area_range
    if area_frac < lo:
        reasons.append(f"area_frac: {area_frac:.4f} < {lo}")
    if area_frac > hi:
        reasons.append(f"area_frac: {area_frac:.4f} > {hi}")
    if border_margin > 0:
        extent = (cols.min() / w, rows.min() / h, (w - 1 - cols.max()) / w, (h - 1 - rows.max()) / h)
        if min(extent) < border_margin:
            reasons.append(f"border: mask within {min(extent):.3f} of an image edge (margin {border_margin})")
    return QCResult(not reasons, iou, area_frac, centroid, reasons)


def _thumbnails(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """[N, size*size] float64 rows, each image resized (area interpolation), zero-mean and unit-norm."""
    rows = []
    for image in images:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected HxW images, got shape {image.shape}")
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
        small -= small.mean()
        norm = np.linalg.norm(small)
        rows.append(small / norm if norm > 0 else small)
    return np.stack(rows) if rows else np.zeros((0, size * size))


def best_mask_iou(masks: np.ndarray, train_masks: np.ndarray, flip_invariant: bool = True) -> np.ndarray:
    """Each mask's highest IoU with any training mask (same size; their mirrors too with ``flip_invariant``): a
    mask copied from the training set scores 1. ``masks`` bool ``[N, S, S]``, ``train_masks`` bool ``[M, S, S]``;
    returns float64 ``[N]`` (0 for an empty mask, and without training masks)."""
    masks, train_masks = np.asarray(masks, bool), np.asarray(train_masks, bool)
    if not len(train_masks) or not len(masks):
        return np.zeros(len(masks))
    if flip_invariant:
        train_masks = np.concatenate([train_masks, train_masks[:, :, ::-1]])
    a = masks.reshape(len(masks), -1).astype(np.float32)
    b = train_masks.reshape(len(train_masks), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1, keepdims=True) + b.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).max(axis=1).astype(np.float64)


def max_similarity(
    synthetic: Sequence[np.ndarray] | np.ndarray,
    train: Sequence[np.ndarray] | np.ndarray,
    size: int = 64,
    flip_invariant: bool = True,
) -> np.ndarray:
    """Highest normalised cross-correlation of each synthetic image with any training image.

    With ``flip_invariant``, the left-right mirror of every training image counts as a training image too,
    so a mirrored copy is caught as well.

    Every image is resized to ``size`` x ``size`` (area interpolation, which anti-aliases when shrinking),
    made zero-mean and unit-norm; the NCC of two images is then the dot product of their vectors.

    Args:
        synthetic: [N, H, W] float images (or a sequence of HxW arrays, sizes may differ).
        train: [M, H', W'] float images, M >= 1.
        size: side of the comparison thumbnails.

    Returns:
        float64 [N] in [-1, 1]; 1.0 for an exact copy of a training image (up to an affine intensity change).
        A constant image correlates 0 with everything.
    """
    t = _thumbnails(train, size)
    if len(t) == 0:
        raise ValueError("max_similarity needs at least one training image")
    if flip_invariant:
        t = np.concatenate([t, t.reshape(len(t), size, size)[:, :, ::-1].reshape(len(t), -1)])
    s = _thumbnails(synthetic, size)
    if len(s) == 0:
        return np.zeros(0)
    return np.clip((s @ t.T).max(axis=1), -1.0, 1.0)


def _quantiles(values: np.ndarray) -> dict[str, float | int | None]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "min": None,
            "p5": None,
            "median": None,
            "p95": None,
            "max": None,
        }
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(q[0]),
        "p5": float(q[1]),
        "median": float(q[2]),
        "p95": float(q[3]),
        "max": float(q[4]),
    }


def summarise_synthetic(
    qc: Sequence[QCResult],
    similarity: np.ndarray,
    threshold: float,
    synthetic_hc_px: Sequence[float] | np.ndarray,
    train_hc_px: Sequence[float] | np.ndarray,
    mask_iou: Sequence[float] | np.ndarray = (),
) -> dict[str, Any]:
    """JSON-able summary of a synthetic dataset.

    Args:
        qc: one QC result per synthetic pair.
        similarity: [N] :func:`max_similarity` of each synthetic image.
        threshold: a pair with similarity above it counts as memorised.
        synthetic_hc_px: head circumference (px) of the synthetic masks; nan where no ellipse fits (dropped).
        train_hc_px: head circumference (px) of the training masks, at the same resolution.
        mask_iou: each synthetic mask's best IoU with a training mask (:func:`best_mask_iou`), where known.

    Returns:
        ``n``, ``qc_pass_rate``, ``qc_failures`` (count per check name), ``ellipse_iou`` (min/p5/median/mean),
        ``memorisation`` (threshold, rate, count, median and max similarity) and ``head_size_px`` (synthetic
        and train distributions, two-sample Kolmogorov-Smirnov statistic and p-value). Rates are None for
        an empty set; ``mask_copies`` (median, p95, max of the best IoU with a training mask, and the share
        above 0.9) when ``mask_iou`` is given.
    """
    n = len(qc)
    iou_values = np.asarray(mask_iou, dtype=np.float64).reshape(-1)
    similarity = np.asarray(similarity, dtype=np.float64).reshape(-1)
    failures: dict[str, int] = {}
    for r in qc:
        for reason in r.reasons:
            name = reason.split(":", 1)[0]
            failures[name] = failures.get(name, 0) + 1
    ious = _quantiles(np.array([r.ellipse_iou for r in qc]))
    memorised = int((similarity > threshold).sum())
    return {
        "n": n,
        "qc_pass_rate": sum(r.passed for r in qc) / n if n else None,
        "qc_failures": failures,
        "ellipse_iou": {k: ious[k] for k in ("min", "p5", "median", "mean")},
        "memorisation": {
            "threshold": float(threshold),
            "rate": memorised / similarity.size if similarity.size else None,
            "count": memorised,
            "median_similarity": float(np.median(similarity)) if similarity.size else None,
            "max_similarity": float(similarity.max()) if similarity.size else None,
        },
        "head_size_px": head_sizes(synthetic_hc_px, train_hc_px),
        "mask_copies": {
            "median_best_iou": float(np.median(iou_values)),
            "p95_best_iou": float(np.percentile(iou_values, 95)),
            "max_best_iou": float(iou_values.max()),
            "share_above_0.9": float((iou_values > 0.9).mean()),
        }
        if iou_values.size
        else None,
    }


def head_sizes(
    synthetic_hc_px: Sequence[float] | np.ndarray, train_hc_px: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """The synthetic and training head-size distributions (px; nan dropped) and their two-sample
    Kolmogorov-Smirnov statistic and p-value (None when either is empty)."""
    syn_values = np.asarray(synthetic_hc_px, dtype=np.float64)
    train_values = np.asarray(train_hc_px, dtype=np.float64)
    syn_values, train_values = syn_values[np.isfinite(syn_values)], train_values[np.isfinite(train_values)]
    ks_stat = ks_p = None
    if syn_values.size and train_values.size:
        ks = stats.ks_2samp(syn_values, train_values)
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    return {"synthetic": _quantiles(synthetic_hc_px), "train": _quantiles(train_hc_px),
            "ks_statistic": ks_stat, "ks_pvalue": ks_p}  # fmt: skip


def _fmt(value: Any, width: int = 10) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    if isinstance(value, int):
        return f"{value:>{width}d}"
    return f"{value:>{width}.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A fixed-width text table of :func:`summarise_synthetic`'s output."""
    mem, iou, head = summary["memorisation"], summary["ellipse_iou"], summary["head_size_px"]
    failures = ", ".join(f"{k} {v}" for k, v in sorted(summary["qc_failures"].items())) or "none"
    lines = [
        f"{'synthetic pairs':<34}{_fmt(summary['n'])}",
        f"{'QC pass rate':<34}{_fmt(summary['qc_pass_rate'])}",
        f"{'QC failures':<36}{failures}",
        f"{'ellipse IoU min/p5/median/mean':<34}"
        + "".join(_fmt(iou[k]) for k in ("min", "p5", "median", "mean")),
        f"{'memorised (NCC > ' + format(mem['threshold'], '.3f') + ')':<34}{_fmt(mem['rate'])}"
        f"{_fmt(mem['count'])}",
        f"{'similarity median/max':<34}{_fmt(mem['median_similarity'])}{_fmt(mem['max_similarity'])}",
        f"{'head circumference (px)':<34}{'synthetic':>10}{'train':>10}",
    ]
    for key in ("n", "mean", "std", "p5", "median", "p95"):
        lines.append(f"{'  ' + key:<34}{_fmt(head['synthetic'][key])}{_fmt(head['train'][key])}")
    lines.append(f"{'  KS statistic / p-value':<34}{_fmt(head['ks_statistic'])}{_fmt(head['ks_pvalue'])}")
    if summary.get("mask_copies"):
        copies = summary["mask_copies"]
        lines.append(f"{'mask best IoU w/ train median/max':<34}{_fmt(copies['median_best_iou'])}"
                     f"{_fmt(copies['max_best_iou'])}")  # fmt: skip
    if "fidelity" in summary:
        lines += format_fidelity(summary["fidelity"])
    return "\n".join(lines)


def format_fidelity(fidelity: dict[str, Any]) -> list[str]:
    """Table lines of the figures of :class:`fetalgen.synthesis.judge.Judge`."""
    agree, spread = fidelity["agreement"], fidelity["diversity"]
    lines = [f"{'fidelity features':<36}{fidelity['features']}", f"{'over':<36}{fidelity['over']}"]
    for ref, kid in fidelity["realism"].items():
        lines.append(
            f"{'KID ± std / FID vs ' + ref:<34}{_fmt(kid['kid'])}{_fmt(kid['kid_std'])}{_fmt(kid['fid'])}"
        )
    if fidelity.get("realism_note"):
        lines.append(f"{'':<34}({fidelity['realism_note']})")
    own = fidelity.get("agreement_own", agree)
    shown = [("pair agreement", agree)] + ([("  by the own pairs (QC, filter)", own)] if own != agree else [])
    for title, figures in shown:  # the own pairs' figures when a fixed reference set measured the others
        lines.append(f"{title + ': synthetic / normalised':<34}{_fmt(figures['synthetic'])}"
                     f"{_fmt(figures.get('normalised'))}")  # fmt: skip
        lines.append(f"{'  ceiling (real) / floor (shuffled)':<34}{_fmt(figures['ceiling'])}"
                     f"{_fmt(figures['floor'])}")  # fmt: skip
    lines.append(f"{'MS-SSIM within set (lower=diverse)':<34}" + "".join(
        f"{k:>10}" for k in spread))  # fmt: skip
    lines.append(f"{'':<34}" + "".join(_fmt(v["ms_ssim"]) for v in spread.values()))
    nn = fidelity["nearest_neighbours"]
    lines.append(
        f"{'feature NN cosine median/max':<34}{_fmt(nn['median_similarity'])}{_fmt(nn['max_similarity'])}"
    )
    return lines
