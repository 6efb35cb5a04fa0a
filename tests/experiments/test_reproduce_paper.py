"""``make reproduce-paper``: every step on real HC18 data, shrunk (preset smoke); missing data stops early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[2] / "experiments" / "reproduce_paper.py"


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, **env},
    )  # fmt: skip


def test_missing_hc18_stops_early_with_the_fix(tmp_path: Path) -> None:
    done = _run(tmp_path, {"FETALGEN_HC18_DIR": str(tmp_path / "nowhere")}, "--preset", "smoke")
    assert done.returncode != 0
    assert "HC18 not found" in done.stderr and "make data" in done.stderr
    assert not (tmp_path / "outputs").exists()  # nothing started


@pytest.mark.slow
@pytest.mark.hc18
def test_smoke_reproduction_on_real_hc18(hc18_dir: Path, tmp_path: Path) -> None:
    env = {
        "FETALGEN_HC18_DIR": str(hc18_dir),
        "FETALGEN_SPANISH_DIR": str(tmp_path / "absent"),
        "FETALGEN_AFRICAN_DIR": str(tmp_path / "absent"),
    }
    results = tmp_path / "results"
    done = _run(tmp_path, env, "--preset", "smoke", "--out", str(tmp_path / "out"), "--results", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Spanish cohort ABSENT" in done.stdout and "Training on HC18 alone" in done.stdout
    table = pd.read_csv(results / "table.csv")
    assert sorted(table["arm"]) == ["real", "strong", "synthetic", "weak"]
    assert set(table["train cohort"]) == {"hc18"} and set(table["N_real"]) == {3}
    text = (results / "results.md").read_text()
    assert "| spanish | 94.66 | – | test set absent |" in text
    assert "hc18 box-ellipse" in text and "## Data notes" in text
    assert (results / "dice_vs_nreal.png").stat().st_size > 1000
    manifest = (tmp_path / "out" / "synthetic" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 6
