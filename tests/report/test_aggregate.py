"""Aggregation of run directories: settings, metrics, failed runs, mean/std by hand, report files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalgen.report.aggregate import (
    collect_runs,
    format_mean_std,
    markdown_table,
    mean_std_table,
    spread,
    summarise,
)
from fetalgen.report.build import build_report, varying_settings


def test_collect_runs_reads_settings_metrics_and_marks_failed(sweep_dir: Path) -> None:
    runs = collect_runs(sweep_dir)
    assert len(runs) == 8
    assert (runs["status"] == "failed").sum() == 1
    assert set(runs["data.num_real"]) == {5, 10}
    assert runs.loc[runs["status"] == "ok", "val/dice"].notna().all()


def test_summarise_mean_std_by_hand(sweep_dir: Path) -> None:
    summary = summarise(collect_runs(sweep_dir), ["data.num_real", "data.synthetic_ratio"], ["val/dice"])
    row = summary[(summary["data.num_real"] == 5) & (summary["data.synthetic_ratio"] == 0.0)].iloc[0]
    assert row["val/dice_mean"] == pytest.approx(0.7)
    assert row["val/dice_std"] == pytest.approx(0.1414213562, rel=1e-6)  # sample std of (0.6, 0.8)
    single = summary[(summary["data.num_real"] == 10) & (summary["data.synthetic_ratio"] == 1.0)].iloc[0]
    assert single["val/dice_n"] == 1 and single["val/dice_std"] == 0.0 and single["n_failed"] == 1


def test_varying_settings_excludes_seed_and_metrics(sweep_dir: Path) -> None:
    assert set(varying_settings(collect_runs(sweep_dir))) == {"data.num_real", "data.synthetic_ratio"}


def test_build_report_writes_tables_and_charts(sweep_dir: Path) -> None:
    report = build_report(sweep_dir)
    text = report.read_text()
    assert "7 runs finished, 1 failed" in text
    assert "70.00 ± 14.14" in text  # val/dice at num_real=5, ratio=0
    for name in ("runs.csv", "summary.csv", "table.csv", "val_dice.png", "test_hc18_dice.png"):
        assert (report.parent / name).stat().st_size > 0


def test_collect_runs_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run found"):
        collect_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        collect_runs(tmp_path / "absent")


def test_format_and_markdown() -> None:
    assert format_mean_std(0.9466, 0.0031) == "94.66 ± 0.31"
    assert format_mean_std(float("nan"), 0.0) == "–"
    import pandas as pd

    md = markdown_table(pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5 |", "| 2 | – |"]


def test_every_table_says_what_its_spread_is_over() -> None:
    import pandas as pd

    runs = pd.DataFrame({
        "arm": ["real", "real", "synthetic"], "status": ["ok"] * 3,
        "test/hc18/dice": [0.80, 0.90, 0.88], "test/hc18/dice_std": [0.01, 0.03, 0.02],
    })  # fmt: skip
    summary = summarise(runs, ["arm"], ["test/hc18/dice", "test/hc18/dice_std"])
    table = mean_std_table(summary, {"Dice": "test/hc18/dice", "absent": "test/x/dice"}, {"arm": "Arm"})
    assert list(table.columns) == ["Arm", "Dice", "± over"]  # a metric the runs lack gets no column
    real, synthetic = table.iloc[0], table.iloc[1]
    assert real["Dice"] == "85.00 ± 7.07" and real["± over"] == "2 seeds"  # sample std over the two seeds
    assert synthetic["Dice"] == "88.00 ± 2.00" and synthetic["± over"] == "repetitions of 1 seed"
    assert spread(summary.iloc[1], "test/hc18/dice") == (pytest.approx(0.02), "repetitions of 1 seed")


def test_a_run_folders_env_interpolation_is_read_as_text(tmp_path: Path, monkeypatch) -> None:
    # A run folder is data: building a report must not read the builder's environment through it.
    monkeypatch.setenv("FETALGEN_SECRET_FOR_TEST", "s3cret")
    run = tmp_path / "runs" / "0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "arm: ${oc.env:FETALGEN_SECRET_FOR_TEST}\ndata:\n  num_real: 5\n"
    )
    (run / "metrics.json").write_text('{"val/dice": 0.5}')
    (row,) = collect_runs(tmp_path / "runs").to_dict("records")
    assert row["arm"] == "${oc.env:FETALGEN_SECRET_FOR_TEST}" and row["data.num_real"] == 5
