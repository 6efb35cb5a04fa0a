"""DDP inside a Hydra multirun, with the launcher GPUs use (Lightning's subprocess launcher, here gloo on the CPU):
each job trains once with two ranks, the extra rank runs that job's own overrides, files come from rank 0 only,
and the results equal the spawned-process DDP of the same job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fetalgen.tasks.finetune import finetune

TINY = ["logger=csv", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "data=folder", "data.num_real=8", "data.num_val=4", "data.num_test=0", "data.batch_size=4",
        "data.image_size=64", "model.sam.image_size=64", "model.train_prompt=tight", "model.eval_prompt=tight",
        "test_split=false", "test_sets=null"]  # fmt: skip


def run_sweep(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a sweep in a process group of its own: on a timeout every rank is killed, not only the first (a rank
    left behind would keep the output pipes open and the test waiting)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_each_job_of_a_sweep_trains_once_with_two_ranks(phantom_dir: Path, tmp_path: Path, compose_cfg):
    logs, sweep = tmp_path / "logs", tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fetalgen.cli.finetune", "-m", "seed=0,1", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.precision=32", f"data.source.root={phantom_dir}", *TINY,
           f"paths.log_dir={logs}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    done = run_sweep(cmd, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("Launching 2 jobs") == 1  # with Lightning's ddp: once per rank
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # the extra ranks started no sweep of their own
    assert not logs.exists() or not any(logs.rglob("metrics.json"))  # nor runs elsewhere
    for job in jobs:
        folder = sweep / job
        assert len(list(folder.rglob("metrics.json"))) == 1 and (folder / "rank_1.log").is_file()
        assert len(list(folder.rglob("metrics.csv"))) == 1 and len(list(folder.rglob(".hydra"))) == 1
        assert (folder / "training_cases.csv").read_text().count("\n") == 9  # header + 8, written once
    # The same job as spawned processes (trainer=ddp_cpu): the same result.
    multirun = json.loads((sweep / "0" / "metrics.json").read_text())
    cfg = compose_cfg("finetune", ["seed=0", "trainer=ddp_cpu", "trainer.precision=32",
                                   f"data.source.root={phantom_dir}", *TINY])  # fmt: skip
    spawned = finetune(cfg)
    assert multirun["val/dice"] == pytest.approx(spawned["val/dice"], abs=1e-6)
    assert multirun["val/loss"] == pytest.approx(spawned["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_the_generator_sweep_trains_each_job_once_with_two_ranks(
    phantom_dir: Path, tmp_path: Path, compose_cfg
):
    from fetalgen.tasks.train_diffusion import train_diffusion

    tiny = ["model=diffusion/tiny", "data=folder", f"data.source.root={phantom_dir}", "data.num_real=8",
            "data.num_val=4", "data.batch_size=4", "trainer.max_steps=3", "trainer.val_check_interval=3",
            "trainer.enable_progress_bar=false", "logger=none", "callbacks.sample_grid.every_n_steps=0",
            "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2", "trainer.precision=32"]  # fmt: skip
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fetalgen.cli.train_diffusion", "-m", "seed=0,1", "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", *tiny, f"paths.log_dir={tmp_path / 'logs'}",
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    done = run_sweep(cmd, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("Launching 2 jobs") == 1
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert len(list((sweep / job).rglob("metrics.json"))) == 1 and (sweep / job / "rank_1.log").is_file()
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    multirun = json.loads((sweep / "0" / "metrics.json").read_text())
    spawned = train_diffusion(compose_cfg("train_diffusion", ["seed=0", "trainer=ddp_cpu", *tiny]))
    assert multirun["global_step"] == spawned["global_step"] == 3
    assert spawned["checkpoint"].endswith("last.ckpt")
    # Not compared: the training noise comes from the global random state, which the spawned ranks start afresh
    # after the model is built, while each subprocess rank builds its model first (fine-tuning draws from seeded
    # streams: equal above).
