"""The real/synthetic sweep as users run it: a Hydra multirun of fetalgen-finetune, then fetalgen-report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"fetalgen.cli.{module}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_multirun_grid_writes_one_metrics_file_per_run_and_aggregates(
    phantom_dir: Path, phantom_synthetic: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    done = _cli(
        "finetune", "-m", "experiment=demo/finetune", "logger=csv",
        "data=folder", f"data.source.root={phantom_dir}",
        "data.num_real=3,6", "data.synthetic_ratio=0,1", f"data.synthetic_dir={phantom_synthetic}",
        "data.num_val=4", "data.num_test=6", "trainer.max_steps=4", "trainer.val_check_interval=2", "eval.repetitions=2", "eval.figure=false",
        f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 4
    grid = set()
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        grid.add((metrics["data/num_real"], metrics["data/num_synthetic"]))
        assert 0.0 <= metrics["test/folder/dice"] <= 1.0 and "test/folder/baseline_dice" in metrics
    assert grid == {(3, 0), (3, 3), (6, 0), (6, 6)}  # synthetic = ratio x real

    report = _cli("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = pd.read_csv(sweep / "report" / "summary.csv")
    assert len(summary) == 4 and set(summary["data.num_real"]) == {3, 6}
    one = summary[(summary["data.num_real"] == 6) & (summary["data.synthetic_ratio"] == 1)].iloc[0]
    run = next(r for r in runs if json.loads((r / "metrics.json").read_text())["data/num_synthetic"] == 6)
    assert one["test/folder/dice_mean"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test/folder/dice"]
    )
    assert (sweep / "report" / "test_folder_dice.png").stat().st_size > 0
