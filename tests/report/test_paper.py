"""The paper's tables: grouping by cohort, arm and N_real; the published figures beside our best."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from fetalgen.report.paper import evaluated_sets, paper_summary, published_comparison, write_paper_results


def _run(root: Path, i: int, arm: str, num_real: int, seed: int, spanish: float) -> None:
    run = root / str(i)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"seed": seed, "arm": arm, "data": {"num_real": num_real}}),
        run / ".hydra" / "config.yaml",
    )
    OmegaConf.save(
        OmegaConf.create(["data=hc18", f"arm={arm}", f"data.num_real={num_real}"]),
        run / ".hydra" / "overrides.yaml",
    )
    metrics = {
        "test/spanish/dice": spanish, "test/spanish/dice_std": 0.01,
        "test/spanish/baseline_dice": 0.85, "test/spanish/baseline_dice_std": 0.002,
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    folder = run / "eval" / "spanish"
    folder.mkdir(parents=True)
    rows = [{"name": f"img{k}", "repetition": 0, "method": method, "dice": value + 0.01 * (k - 1.5)}
            for k in range(4)
            for method, value in (("sam", spanish), ("sam_ellipse", spanish + 0.02), ("box_ellipse", 0.85))]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "per_image.csv", index=False)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    i = 0
    for arm, base in (("real", 0.90), ("synthetic", 0.93)):
        for num_real in (5, 10):
            for seed in (0, 1):
                _run(tmp_path, i, arm, num_real, seed, base + 0.01 * (num_real == 10) + 0.002 * seed)
                i += 1
    return tmp_path


def test_summary_groups_by_cohort_arm_and_nreal(sweep: Path) -> None:
    from fetalgen.report.aggregate import collect_runs

    runs = collect_runs(sweep)
    assert evaluated_sets(runs) == ["spanish"]
    summary = paper_summary(runs)
    assert len(summary) == 4
    row = summary[(summary["arm"] == "synthetic") & (summary["data.num_real"] == 10)].iloc[0]
    assert row["test/spanish/dice_mean"] == pytest.approx(0.941)
    assert row["test/spanish/dice_n"] == 2


def test_published_comparison_takes_the_best_synthetic_run(sweep: Path) -> None:
    from fetalgen.report.aggregate import collect_runs

    table = published_comparison(paper_summary(collect_runs(sweep)))
    spanish = table[table["test set"] == "spanish"].iloc[0]
    assert spanish["published (Wang et al. 2025)"] == "94.66"
    assert spanish["ours"].startswith("94.10 ± ")  # synthetic, N_real=10: mean of 0.940 and 0.942
    assert spanish["ours: training cohort, N_real"] == "hc18, N_real=10"
    assert table[table["test set"] == "african"].iloc[0]["ours"] == "–"


def test_write_paper_results(sweep: Path, tmp_path: Path) -> None:
    report = write_paper_results(sweep, tmp_path / "results")
    assert "8 runs finished, 0 failed" in report.read_text()
    assert (tmp_path / "results" / "dice_vs_nreal.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "results" / "table.csv")) == 4
    paired = pd.read_csv(tmp_path / "results" / "paired_spanish.csv").set_index(["arm", "N_real"])
    # synthetic - real is +0.03 on every image of every seed: the paired CI collapses onto it
    assert paired.loc[
        ("synthetic", 5), ["diff_real", "diff_real_low", "diff_real_high"]
    ].tolist() == pytest.approx([0.03, 0.03, 0.03])
    assert paired.loc[("box-ellipse", 0), "dice"] == pytest.approx(0.85)
    assert "| hc18 | 5 | synthetic |" in report.read_text() and "+3.00 [+3.00, +3.00]" in report.read_text()
    ellipses = pd.read_csv(tmp_path / "results" / "paired_spanish_ellipse.csv").set_index(["arm", "N_real"])
    assert ellipses.loc[("real", 5), "dice"] == pytest.approx(paired.loc[("real", 5), "dice"] + 0.02)
    assert ellipses.loc[("synthetic", 5), "diff_real"] == pytest.approx(0.03)
    assert "SAM's masks read as their fitted ellipses" in report.read_text()
