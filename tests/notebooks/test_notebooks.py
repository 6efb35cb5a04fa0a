"""The notebooks run end to end on phantom data, so they never rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fetalgen.data.synthetic import ManifestEntry

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def _synthetic_from_phantoms(phantom_dir: Path, root: Path) -> Path:
    """A synthetic-layout dataset made of phantom pairs, every third pair marked as failed QC."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = []
    for i, image in enumerate(sorted((phantom_dir / "images").glob("*.png"))[:9]):
        mask = next((phantom_dir / "masks").glob(f"{image.stem}*"))
        name = f"syn_{i:06d}"
        shutil.copy(image, root / "images" / f"{name}.png")
        shutil.copy(mask, root / "masks" / f"{name}.png")
        entry = ManifestEntry(
            index=i,
            name=name,
            image=f"images/{name}.png",
            mask=f"masks/{name}.png",
            seed=i,
            checkpoint_sha256="0" * 64,
            sampler="dpmsolver++",
            steps=20,
            qc_pass=i % 3 != 0,
            qc={"ellipse_iou": 0.95},
            max_train_similarity=0.5,
        )
        lines.append(entry.to_json())
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_explore_notebook_runs(phantom_dir: Path, sweep_dir: Path, tmp_path: Path, monkeypatch) -> None:
    synthetic = _synthetic_from_phantoms(phantom_dir, tmp_path / "synthetic")
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
    assert (figures / "val_dice.png").stat().st_size > 0
    assert (figures / "test_hc18_dice.png").stat().st_size > 0
