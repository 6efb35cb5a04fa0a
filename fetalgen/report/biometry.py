"""Head circumference in mm per arm: the mean absolute difference from the annotation's ellipse, its bias, and how
often no ellipse could be fitted, over the test images and seeds of each arm (HC is what a user measures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fetalgen.report.paired import bootstrap_ci

# Published HC18 fully automatic methods, mean absolute HC difference on HC18's official test set (mm): for scale.
PUBLISHED_HC_MAD_MM = {"Fiorentino et al. 2021": 1.90, "DAG V-Net": 1.77}


def hc_errors(run_dir: str | Path, test_set: str, method: str = "sam") -> pd.Series:
    """Signed HC error (mm, predicted minus the annotation's ellipse) per test image, averaged over box repetitions
    (NaN: no ellipse fitted to the prediction, or no pixel size)."""
    rows = pd.read_csv(Path(run_dir) / "eval" / test_set / "per_image.csv")
    if not {"hc_pred_mm", "hc_true_mm"} <= set(rows.columns):  # a table written without HC
        return pd.Series(dtype=float)
    rows = rows[rows["method"] == method]
    return (rows["hc_pred_mm"] - rows["hc_true_mm"]).groupby(rows["name"]).mean().sort_index()


def hc_comparison(runs: pd.DataFrame, test_set: str, method: str = "sam", n_boot: int = 2000) -> pd.DataFrame:
    """One row per (N_real, arm): ``hc_mad_mm`` with its bootstrap CI over seeds and images, ``hc_bias_mm`` and
    ``no_ellipse`` (the share of image x seed predictions without an HC); runs without the set are left out."""
    ok = runs[(runs["status"] == "ok") & runs["run_dir"].map(
        lambda d: (Path(d) / "eval" / test_set / "per_image.csv").is_file()
    )]  # fmt: skip
    rows = []
    for (n, arm), group in ok.groupby(["data.num_real", "arm"]):
        signed = pd.DataFrame(
            {int(r["seed"]): hc_errors(r["run_dir"], test_set, method) for _, r in group.iterrows()}
        ).T
        mad, low, high = bootstrap_ci(signed.abs().to_numpy(), n_boot)
        rows.append({"N_real": 0 if arm == "zero_shot" else int(n), "arm": arm, "seeds": len(signed),
                     "hc_mad_mm": mad, "hc_mad_low": low, "hc_mad_high": high,
                     "hc_bias_mm": float(np.nanmean(signed.to_numpy())),
                     "no_ellipse": float(np.isnan(signed.to_numpy()).mean())})  # fmt: skip
    return pd.DataFrame(rows).drop_duplicates(["N_real", "arm"]) if rows else pd.DataFrame()


def hc_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The printable table of :func:`hc_comparison`."""
    return pd.DataFrame({
        "N_real": comparison["N_real"].map(lambda n: "–" if n == 0 else int(n)),
        "arm": comparison["arm"],
        "seeds": comparison["seeds"],
        "HC MAD mm [95% CI]": [f"{r.hc_mad_mm:.2f} [{r.hc_mad_low:.2f}, {r.hc_mad_high:.2f}]"
                               for r in comparison.itertuples()],
        "bias mm": comparison["hc_bias_mm"].map(lambda v: f"{v:+.2f}"),
        "no ellipse": comparison["no_ellipse"].map(lambda v: f"{100 * v:.1f} %"),
    })  # fmt: skip
