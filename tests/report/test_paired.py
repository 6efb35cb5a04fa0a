"""Paired comparison with bootstrap CIs: hand-made per-image results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fetalgen.report.paired import bootstrap_ci, format_ci, paired_comparison, paired_table

IMAGES = [f"img{i}" for i in range(8)]


def test_bootstrap_of_a_constant_is_the_constant() -> None:
    assert bootstrap_ci(np.full((3, 8), 0.7)) == pytest.approx((0.7, 0.7, 0.7))


def test_bootstrap_interval_covers_the_mean_and_widens_with_spread() -> None:
    rng = np.random.default_rng(0)
    narrow = 0.8 + 0.01 * rng.standard_normal((3, 50))
    wide = 0.8 + 0.10 * rng.standard_normal((3, 50))
    m, lo, hi = bootstrap_ci(narrow)
    assert lo < m < hi and hi - lo < 0.01
    m2, lo2, hi2 = bootstrap_ci(wide)
    assert lo2 < m2 < hi2 and hi2 - lo2 > 5 * (hi - lo)
    assert bootstrap_ci(wide, seed=1) != bootstrap_ci(wide, seed=2)  # seeded draws
    assert bootstrap_ci(wide, seed=1) == bootstrap_ci(wide, seed=1)


def _run(root: Path, arm: str, n: int, seed: int, dice: list[float], base: list[float]) -> dict:
    run = root / f"{arm}_{n}_{seed}"
    folder = run / "eval" / "hc18"
    folder.mkdir(parents=True)
    rows = []
    for rep in range(2):  # two box repetitions, averaged per image
        for name, d, b in zip(IMAGES, dice, base, strict=True):
            rows += [{"name": name, "repetition": rep, "method": "sam", "dice": d + (0.01 if rep else -0.01)},
                     {"name": name, "repetition": rep, "method": "box_ellipse", "dice": b}]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "per_image.csv", index=False)
    return {"run_dir": str(run), "status": "ok", "data": "hc18", "arm": arm, "data.num_real": n, "seed": seed,
            "labels/sam": n, "labels/generator": 60 if arm == "synthetic" else 0,
            "labels/total": n + (60 if arm == "synthetic" else 0), "train/steps": 100}  # fmt: skip


def test_paired_differences_against_real_only_and_the_label_budget(tmp_path: Path) -> None:
    base = [0.8] * 8
    real = [0.70, 0.72, 0.68, 0.71, 0.69, 0.70, 0.73, 0.67]
    rows = []
    for seed in (0, 1):
        shift = 0.01 * seed
        rows.append(_run(tmp_path, "real", 5, seed, [d + shift for d in real], base))
        rows.append(_run(tmp_path, "synthetic", 5, seed, [d + shift + 0.05 for d in real], base))
        rows.append(_run(tmp_path, "reference", 60, seed, [d + shift + 0.05 for d in real], base))
    comparison = paired_comparison(pd.DataFrame(rows), "hc18", n_boot=500)
    by_arm = comparison.set_index("arm")
    # Every image gains exactly 0.05 in every seed: the paired difference and its CI are 0.05.
    syn = by_arm.loc["synthetic"]
    assert (syn["diff_real"], syn["diff_real_low"], syn["diff_real_high"]) == pytest.approx(
        (0.05, 0.05, 0.05)
    )
    assert syn["diff_budget"] == pytest.approx(0.0) and syn["diff_real_seeds"] == 2
    assert syn["total"] == 65 and syn["generator"] == 60
    assert by_arm.loc["real", "dice"] == pytest.approx(np.mean(real) + 0.005)
    assert by_arm.loc["real", "dice_low"] < by_arm.loc["real", "dice"] < by_arm.loc["real", "dice_high"]
    assert pd.isna(by_arm.loc["real", "diff_real"])  # no difference of an arm to itself
    assert by_arm.loc["box-ellipse", "dice"] == pytest.approx(0.8)
    # against the baseline on the arm's own boxes: real-only is below it by 0.8 - mean(real) - 0.005 (its seeds)
    assert by_arm.loc["real", "diff_baseline"] == pytest.approx(np.mean(real) + 0.005 - 0.8)
    assert by_arm.loc["synthetic", "diff_baseline_high"] < 0
    table = paired_table(comparison)
    assert table.loc[table["arm"] == "synthetic", "Δ vs box-ellipse [95% CI]"].item().startswith("-4.")
    assert table.loc[table["arm"] == "synthetic", "Δ vs real-only [95% CI]"].item() == "+5.00 [+5.00, +5.00]"
    assert table.loc[table["arm"] == "synthetic", "labels SAM / generator / total"].item() == "5 / 60 / 65"
    # level with real-only training on 60 labels: worth 60 (a curve of real at 5 and the reference at 60)
    assert table.loc[table["arm"] == "synthetic", "worth real labels"].item() == "60"
    assert table.loc[table["arm"] == "real", "worth real labels"].item() == "5"


def test_format_ci() -> None:
    assert format_ci(0.885, 0.879, 0.891) == "88.50 [87.90, 89.10]"
    assert format_ci(-0.01, -0.02, 0.0, signed=True) == "-1.00 [-2.00, +0.00]"
    assert format_ci(float("nan"), 0, 0) == "–"


def test_label_equivalence_interpolates_on_the_real_only_curve() -> None:
    from fetalgen.report.paired import label_equivalence

    curve = [(5, 0.78), (20, 0.84), (50, 0.88), (60, 0.87)]  # the reference's dip is flattened, not inverted
    assert label_equivalence(0.795, curve) == "9"  # a quarter of the way from 5 to 20: 8.75
    assert label_equivalence(0.84, curve) == "20"
    assert label_equivalence(0.70, curve) == "< 5 (below the measured range)"
    assert label_equivalence(0.90, curve) == "> 60 (beyond the measured range)"
    assert label_equivalence(float("nan"), curve) == "–" and label_equivalence(0.8, []) == "–"
