"""Paired comparison of training arms: the same test images, the same jittered boxes, bootstrap intervals.

All arms of one (N_real, seed) are evaluated on the same test images with the same boxes (the boxes are drawn
from the evaluation seed and the case name only), so an arm is compared with the real-only arm image by image.
Uncertainty covers both sources of variation: a bootstrap draw resamples the seeds (training runs) and,
independently, the test images, then averages the per-image Dice (itself the mean over box repetitions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_ARM = "real"  # differences are taken against this arm at the same N_real
BUDGET_ARM = "reference"  # real-only training on every label the paper's generator saw
ZERO_SHOT_ARM = "zero_shot"  # the pretrained model, not fine-tuned: what fine-tuning must beat to count
CI_LEVEL = 0.95


def per_image_scores(
    run_dir: str | Path, test_set: str, method: str = "sam", metric: str = "dice"
) -> pd.Series:
    """``metric`` per test image of one run, averaged over box repetitions (index: case name).

    Raises:
        FileNotFoundError: the run has no ``eval/<test_set>/per_image.csv``.
    """
    path = Path(run_dir) / "eval" / test_set / "per_image.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-image results for test set {test_set!r}")
    rows = pd.read_csv(path)
    rows = rows[rows["method"] == method]
    return rows.groupby("name")[metric].mean().sort_index()


def bootstrap_ci(
    scores: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float, float]:
    """Mean of a ``[seeds, images]`` score matrix and its percentile bootstrap interval.

    Each draw resamples the rows (seeds) and the columns (images) with replacement; with one seed only the
    images vary. NaN entries (no ellipse, ...) are left out of each mean.

    Returns:
        ``(mean, low, high)``.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n_seeds, n_images = scores.shape
    if scores.size == 0 or np.isnan(scores).all():
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(n_seeds, size=n_seeds)
        cols = rng.integers(n_images, size=n_images)
        draws[b] = np.nanmean(scores[np.ix_(rows, cols)])
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])  # a draw of only NaN cells has no mean
    return float(np.nanmean(scores)), float(low), float(high)


def score_matrix(runs: pd.DataFrame, test_set: str, method: str = "sam") -> pd.DataFrame:
    """``[seed, image]`` Dice of the runs of one arm (rows: seeds, sorted; columns: case names)."""
    series = {int(r["seed"]): per_image_scores(r["run_dir"], test_set, method) for _, r in runs.iterrows()}
    return pd.DataFrame(series).T.sort_index()


def _paired(a: pd.DataFrame, b: pd.DataFrame, n_boot: int) -> tuple[float, float, float, int]:
    """Bootstrap of ``a - b`` over their common seeds and images; also returns the number of common seeds."""
    seeds = a.index.intersection(b.index)
    images = a.columns.intersection(b.columns)
    if len(seeds) == 0 or len(images) == 0:
        return (np.nan, np.nan, np.nan, 0)
    diff = a.loc[seeds, images].to_numpy() - b.loc[seeds, images].to_numpy()
    return (*bootstrap_ci(diff, n_boot), len(seeds))


def paired_comparison(
    runs: pd.DataFrame, test_set: str, cohort_key: str = "data", n_boot: int = 2000, method: str = "sam"
) -> pd.DataFrame:
    """One row per (training cohort, N_real, arm) with Dice and its CI, and the paired differences, of the arms'
    ``method`` (``sam``: the predicted masks; ``sam_ellipse``: each read as its fitted ellipse).

    Columns: ``train cohort, N_real, arm, seeds, dice, dice_low, dice_high``; ``diff_real`` (and ``_low``,
    ``_high``, ``_seeds``): the arm minus the real-only arm at the same N_real on the same seeds and images;
    ``diff_budget*``: the arm minus the label-budget reference (arm ``reference``) on the same seeds;
    ``diff_zero_shot*``: the arm minus the zero-shot pretrained model (arm ``zero_shot``, run at any N_real: it
    trains on nothing; its row has N_real 0);
    ``diff_baseline*``: the arm minus the box-ellipse baseline on the very boxes the arm got; the
    labels behind the arm (``labels_sam``, ``labels_generator``, ``labels_total``, means over seeds), its
    ``steps`` and synthetic pairs used; ``label_equivalence``: the real labels its Dice is worth on the real-only
    curve; and one ``box-ellipse`` row per cohort (its Dice on the same boxes).
    Runs without ``eval/<test_set>`` are left out.
    """
    ok = runs[(runs["status"] == "ok") & runs["run_dir"].map(
        lambda d: (Path(d) / "eval" / test_set / "per_image.csv").is_file()
    )].copy()  # fmt: skip
    if ok.empty:
        return pd.DataFrame()
    if cohort_key not in ok.columns:
        ok[cohort_key] = "-"
    rows = []
    for cohort, part in ok.groupby(cohort_key, dropna=False):
        matrices = {
            (int(n), arm): score_matrix(group, test_set, method)
            for (n, arm), group in part.groupby(["data.num_real", "arm"])
        }
        budget = next((m for (_, arm), m in matrices.items() if arm == BUDGET_ARM), None)
        # zero-shot is the same model at every N_real: its run at any N_real (same seeds, same boxes) serves all
        any_zero = next((m for (_, arm), m in matrices.items() if arm == ZERO_SHOT_ARM), None)
        for (n, arm), matrix in sorted(matrices.items()):
            group = part[(part["data.num_real"] == n) & (part["arm"] == arm)]
            mean, low, high = bootstrap_ci(matrix.to_numpy(), n_boot)
            row = {"train cohort": cohort, "N_real": 0 if arm == ZERO_SHOT_ARM else n, "arm": arm, "seeds": len(matrix),
                   "dice": mean, "dice_low": low, "dice_high": high}  # fmt: skip
            real = matrices.get((n, REFERENCE_ARM)) if arm != REFERENCE_ARM else None
            zero = matrices.get((n, ZERO_SHOT_ARM), any_zero) if arm != ZERO_SHOT_ARM else None
            row |= _differences(matrix, n_boot, {
                "baseline": score_matrix(group, test_set, method="box_ellipse"), "real": real, "zero_shot": zero,
                "budget": budget if arm != BUDGET_ARM else None})  # fmt: skip
            for key in ("labels/sam", "labels/generator", "labels/total", "unlabelled/total", "train/steps",
                        "data/num_synthetic", "data/synthetic_memorised_excluded"):  # fmt: skip
                if key in group.columns:
                    name = key.split("/", 1)[1] if key.startswith("labels") else key.replace("/total", "")
                    row[name] = group[key].mean()
            rows.append(row)
        first = part.drop_duplicates("seed")
        base = score_matrix(first, test_set, method="box_ellipse")
        mean, low, high = bootstrap_ci(base.to_numpy(), n_boot)
        rows.append({"train cohort": cohort, "N_real": 0, "arm": "box-ellipse", "seeds": len(base),
                     "dice": mean, "dice_low": low, "dice_high": high})  # fmt: skip
    return add_label_equivalence(pd.DataFrame(rows))


def _differences(matrix: pd.DataFrame, n_boot: int, others: dict[str, pd.DataFrame | None]) -> dict[str, Any]:
    """``diff_<name>`` with its CI (``_low``, ``_high``) of the arm against each comparison given (None: none),
    and the seeds they share (``_seeds``) for the real-only arm and the label-budget reference."""
    row: dict[str, Any] = {}
    for name, other in others.items():
        if other is None:
            continue
        d, lo, hi, k = _paired(matrix, other, n_boot)
        row |= {f"diff_{name}": d, f"diff_{name}_low": lo, f"diff_{name}_high": hi}
        if name in ("real", "budget"):
            row[f"diff_{name}_seeds"] = k
    return row


def label_equivalence(dice: float, curve: list[tuple[float, float]]) -> str:
    """The number of real labels an arm's Dice is worth: the N_real at which the real-only curve (``(N_real,
    Dice)`` points: the real arm, and the label-budget reference at its labels) reaches ``dice``, linearly
    interpolated; the curve is made non-decreasing first (a dip between seeds is noise, not fewer labels).
    Outside the measured range it says so (``"< 5"``, ``"> 60"``)."""
    if pd.isna(dice) or not curve:
        return "–"
    points = sorted(curve)
    n = np.array([p[0] for p in points], dtype=float)
    d = np.maximum.accumulate(np.array([p[1] for p in points], dtype=float))
    if dice < d[0]:
        return f"< {n[0]:.0f} (below the measured range)"
    if dice > d[-1]:
        return f"> {n[-1]:.0f} (beyond the measured range)"
    k = int(np.argmax(d >= dice))
    if k == 0 or d[k] == d[k - 1]:
        return f"{n[k]:.0f}"
    return f"{n[k - 1] + (dice - d[k - 1]) / (d[k] - d[k - 1]) * (n[k] - n[k - 1]):.0f}"


def add_label_equivalence(comparison: pd.DataFrame) -> pd.DataFrame:
    """``label_equivalence`` (:func:`label_equivalence`) for every arm row, per training cohort, on the curve of
    its real-only rows and the label-budget reference."""
    out = comparison.copy()
    out["label_equivalence"] = "–"
    for _, part in out.groupby("train cohort"):
        real = part[part["arm"].isin([REFERENCE_ARM, BUDGET_ARM])]
        curve = [(float(r["sam"]) if "sam" in r and not pd.isna(r["sam"]) else float(r["N_real"]), float(r["dice"]))
                 for _, r in real.iterrows() if not pd.isna(r["dice"])]  # fmt: skip
        for i, r in part.iterrows():
            if r["arm"] not in ("box-ellipse", ZERO_SHOT_ARM):
                out.loc[i, "label_equivalence"] = label_equivalence(r["dice"], curve)
    return out


def format_ci(mean: float, low: float, high: float, scale: float = 100.0, signed: bool = False) -> str:
    """``"88.51 [87.90, 89.10]"`` (percent points by default); ``"–"`` when missing."""
    if mean is None or pd.isna(mean):
        return "–"
    sign = "+" if signed else ""
    return f"{mean * scale:{sign}.2f} [{low * scale:{sign}.2f}, {high * scale:{sign}.2f}]"


def paired_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The printable table of :func:`paired_comparison`: Dice and differences in %, 95 % CIs in brackets."""
    out = pd.DataFrame(
        {
            "train cohort": comparison["train cohort"],
            "N_real": comparison["N_real"].map(lambda n: "–" if n == 0 else int(n)),
            "arm": comparison["arm"],
            "labels SAM / generator / total": [
                "–"
                if pd.isna(r.get("sam"))
                else f"{r['sam']:.0f} / {r.get('generator', 0):.0f} / {r['total']:.0f}"
                for _, r in comparison.iterrows()
            ],
            "seeds": comparison["seeds"],
            "Dice % [95% CI]": [format_ci(r.dice, r.dice_low, r.dice_high) for r in comparison.itertuples()],
        }
    )
    for key, label in (
        ("diff_real", "Δ vs real-only"),
        ("diff_budget", "Δ vs label-budget reference"),
        ("diff_zero_shot", "Δ vs zero-shot"),
        ("diff_baseline", "Δ vs box-ellipse"),
    ):
        if key in comparison.columns:
            out[f"{label} [95% CI]"] = [
                format_ci(r[key], r[f"{key}_low"], r[f"{key}_high"], signed=True)
                for _, r in comparison.iterrows()
            ]
    if "unlabelled" in comparison.columns:  # images seen without masks (the pseudo-labeller's pool)
        out["unlabelled images"] = comparison["unlabelled"].map(lambda v: "–" if pd.isna(v) else f"{v:.0f}")
    if "label_equivalence" in comparison.columns:
        out["worth real labels"] = comparison["label_equivalence"]
    if "train/steps" in comparison.columns:
        out["steps"] = comparison["train/steps"].map(lambda v: "–" if pd.isna(v) else f"{v:.0f}")
    if "data/num_synthetic" in comparison.columns:
        out["synthetic pairs (memorised excluded)"] = [
            "–" if pd.isna(r.get("data/num_synthetic"))
            else f"{r['data/num_synthetic']:.0f} ({r.get('data/synthetic_memorised_excluded', 0):.0f})"
            for _, r in comparison.iterrows()
        ]  # fmt: skip
    return out
