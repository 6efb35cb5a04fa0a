"""Cluster launch rehearsed here: hydra-submitit-launcher's local executor runs a 2-job sweep, the SLURM configs
compose, and a requeued job resumes from its own last.ckpt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

TINY = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "data=folder", "data.num_real=4", "data.num_val=4", "data.num_test=0", "data.image_size=32",
        "model.sam.image_size=64", "test_split=false", "test_sets=null"]  # fmt: skip


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_a_two_job_sweep(phantom_dir: Path, tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fetalgen.cli.finetune", "-m", "hydra/launcher=slurm_local", "seed=0,1",
           f"data.source.root={phantom_dir}", *TINY, f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["train/steps"] == 2 and 0 <= metrics["val/dice"] <= 1
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit


def test_the_slurm_configs_compose_and_ranks_come_from_slurm(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fetalgen.cli import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "finetune", overrides=["hydra/launcher=slurm", "trainer=multinode"], return_hydra_config=True
        )
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.max_num_timeout == 3
    assert (
        launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4 and launcher.nodes == 2
    )
    (plugin,) = instantiate(cfg.trainer.plugins)
    assert type(plugin).__name__ == "SLURMEnvironment" and plugin.auto_requeue is False
    assert (
        cfg.trainer.strategy._target_ == "fetalgen.tasks.ddp.HydraJobDDPStrategy"
        and cfg.auto_resume == "requeue"
    )
