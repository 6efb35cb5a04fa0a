"""The notebooks run end to end on phantom data, so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


@pytest.mark.slow
def test_explore_notebook_runs(judged_synthetic: Path, sweep_dir: Path, tmp_path: Path, monkeypatch) -> None:
    synthetic = judged_synthetic
    figures = tmp_path / "figures"
    monkeypatch.setenv("FETALGEN_SYNTHETIC_DIR", str(synthetic))
    monkeypatch.setenv("FETALGEN_SWEEP_DIR", str(sweep_dir))
    monkeypatch.setenv("FETALGEN_FIGURE_DIR", str(figures))
    nb = nbformat.read(NOTEBOOKS / "explore_synthetic_and_sweep.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "'total': 9, 'kept': 6, 'qc_failed': 3" in text
    assert "QC pass rate: 66.7%" in text
    assert "pair agreement: synthetic" in text and "KID" in text  # the fidelity figures, printed
    assert (figures / "pair_agreement.png").stat().st_size > 0
    assert (figures / "val_dice.png").stat().st_size > 0
    assert (figures / "test_hc18_dice.png").stat().st_size > 0
