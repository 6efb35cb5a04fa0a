"""W&B through Lightning's WandbLogger, offline: the run directory holds the config, losses and evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fetalgen.tasks.finetune import finetune
from fetalgen.tasks.run_names import run_id


def _records(run_dir: Path) -> list[dict]:
    """Every record of an offline run's transaction log, read with W&B's own CLI."""
    wandb = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_offline_run_holds_config_losses_and_evaluation(
    compose_cfg, phantom_dir: Path, judged_synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must come from the config itself
    synthetic = judged_synthetic
    cfg = compose_cfg(
        "finetune",
        [
            "experiment=demo/finetune", "logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=1", "data=folder",
            f"data.source.root={phantom_dir}", "data.num_real=4", "data.num_val=4", "data.num_test=4",
            "eval.repetitions=2", f"data.synthetic_dir={synthetic}", "data.num_synthetic=2",
        ],
    )  # fmt: skip
    assert cfg.logger.wandb.offline is True
    metrics = finetune(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = _records(runs[0])
    history = set().union(*(r["history"]["item"] for r in records if r["type"] == "history"))
    assert {"train/loss", "val/loss", "val/dice", "test/folder/dice", "test/folder/baseline_dice"} <= history
    config = {}
    for r in records:
        if r["type"] in ("config", "run"):
            config |= (r.get("config") or r["run"].get("config") or {}).get("update", {})
    assert config["data"]["num_real"] == 4 and config["model"]["sam"]["model_type"] == "tiny"
    # The synthetic set's fidelity figures and its nearest-neighbour gallery.
    assert 0 <= config["synthetic/pair_agreement"] <= 1 and config["synthetic/kid_train_std"] > 0
    assert config["synthetic/features"].startswith("sam-tiny")
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary |= r["summary"].get("update", {})
    assert summary["test/folder/dice"] == pytest.approx(metrics["test/folder/dice"])
    media = runs[0] / "files" / "media"
    assert list(media.glob("table/test/folder/per_image_*.table.json"))
    assert list(media.glob("images/test/folder/cases_*.png"))
    assert list(media.glob("images/synthetic/nearest_neighbours_*.png"))


@pytest.mark.slow
def test_multirun_jobs_are_grouped_by_sweep_and_named_by_overrides(phantom_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "my_sweep"
    done = subprocess.run(
        [
            sys.executable, "-m", "fetalgen.cli.finetune", "-m", "experiment=demo/finetune", "logger=wandb",
            "data=folder", f"data.source.root={phantom_dir}", "data.num_real=2,3", "data.num_val=2",
            "data.num_test=0", "trainer.max_steps=1", "trainer.val_check_interval=1", f"hydra.sweep.dir={sweep}",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_SILENT": "true"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [next((sweep / str(i) / "wandb").glob("offline-run-*")) for i in (0, 1)]
    headers = [next(r["run"] for r in _records(run) if r["type"] == "run") for run in runs]
    assert {h["run_group"] for h in headers} == {"finetune-my_sweep"}
    names = sorted(h["display_name"] for h in headers)
    assert names[0].startswith("data.num_real=2,") and names[1].startswith("data.num_real=3,")
    assert "paths.log_dir" not in names[0] and "data=folder" in names[0]
    assert not any(
        "/" in name for name in names
    )  # no absolute paths (a path value would show by its last part)
    # The id comes from the job's folder: a requeued job (same folder) continues its run instead of a new one.
    assert [h["run_id"] for h in headers] == [run_id(str(sweep / str(i))) for i in (0, 1)]
    summaries = [{k: v for r in _records(run) if r["type"] == "summary" for k, v in r["summary"].get("update", {}).items()}
                 for run in runs]  # fmt: skip
    assert all(0 <= s["val/dice_best"] <= 1 and s["val/dice"] == s["val/dice_best"] for s in summaries)
    assert all("demo" in h["tags"] for h in headers)


def test_a_path_value_in_a_run_name_shows_by_its_last_part(monkeypatch):
    from types import SimpleNamespace

    from fetalgen.tasks import run_names

    job = SimpleNamespace(job=SimpleNamespace(config=SimpleNamespace(override_dirname=SimpleNamespace(
        exclude_keys=["seed"]))), overrides=SimpleNamespace(task=["data.synthetic_dir=/scratch/me/sets/n5_seed0",
                                                                  "arm=matched", "seed=1"]))  # fmt: skip
    monkeypatch.setattr(run_names, "_multirun", lambda: job)
    assert run_names.run_name("finetune") == "arm=matched,data.synthetic_dir=n5_seed0"
