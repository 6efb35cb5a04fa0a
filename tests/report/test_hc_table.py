"""HC per arm in the report: mean absolute difference, bias and failures, hand-computed on two tiny runs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fetalgen.report.biometry import hc_comparison, hc_table


def run(root: Path, seed: int, errors: dict[str, list[float]]) -> dict:
    """A run folder whose eval/t/per_image.csv holds ``errors`` (mm, one per repetition) for each image."""
    rows = [{"name": name, "repetition": k, "method": method, "hc_true_mm": 100.0,
             "hc_pred_mm": 100.0 + e if method == "sam" else 0.0}
            for name, reps in errors.items() for k, e in enumerate(reps) for method in ("sam", "box_ellipse")]  # fmt: skip
    folder = root / f"run{seed}" / "eval" / "t"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "per_image.csv", index=False)
    return {
        "run_dir": str(root / f"run{seed}"),
        "status": "ok",
        "seed": seed,
        "data.num_real": 5,
        "arm": "real",
    }


def test_hc_mad_bias_and_missing_ellipses_are_what_the_rows_say(tmp_path: Path):
    runs = pd.DataFrame(
        [
            run(tmp_path, 0, {"a": [2.0, 4.0], "b": [-6.0, -6.0]}),  # per image: +3, -6
            run(tmp_path, 1, {"a": [1.0, 1.0], "b": [np.nan, np.nan]}),
        ]
    )  # +1, no ellipse
    (row,) = hc_comparison(runs, "t", n_boot=200).to_dict("records")
    assert row["hc_mad_mm"] == pytest.approx((3 + 6 + 1) / 3)  # the NaN is left out
    assert row["hc_bias_mm"] == pytest.approx((3 - 6 + 1) / 3) and row["no_ellipse"] == pytest.approx(0.25)
    assert row["hc_mad_low"] <= row["hc_mad_mm"] <= row["hc_mad_high"]
    table = hc_table(pd.DataFrame([row]))
    assert table.loc[0, "bias mm"] == "-0.67" and table.loc[0, "no ellipse"] == "25.0 %"
