"""``make demo`` runs end to end; here shrunk to a few steps (the full demo takes a few minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


@pytest.mark.slow
def test_demo_pipeline_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable, str(EXPERIMENTS / "demo.py"), "--out", str(out), "--diffusion-steps", "20",
            "--n-synthetic", "8", "--ratios", "0", "--sam-steps", "4", "--logger", "csv", "--segmenter-steps", "10",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out / "report" / "report.md"
    assert f"Report: {report}" in done.stdout
    text = report.read_text()
    assert "| synthetic / real | SAM Dice (%) | box-ellipse Dice (%) | ± over |" in text
    assert "| 0 | " in text
    assert "image-mask agreement" in text and "Features: sam-tiny encoder" in text  # the set's fidelity
    for name in ("synthetic_pairs.png", "dice_vs_ratio.png"):
        assert (out / "report" / name).stat().st_size > 1000
    assert len((out / "synthetic" / "manifest.jsonl").read_text().splitlines()) == 8
    assert (out / "sweep" / "0" / "metrics.json").is_file()
