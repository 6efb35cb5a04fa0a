"""Preemption: a signalled training run saves last.ckpt after its current step, ends, and resumes from there."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = ["model=diffusion/tiny", "data.num_real=8", "data.num_val=4", "data.source.n=12", "data.source.shape=[68,100]",
        "data.batch_size=4", "trainer.enable_progress_bar=false"]  # fmt: skip


def generator_run(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "fetalgen.cli.train_diffusion", f"hydra.run.dir={out}",
            f"paths.log_dir={out.parent / 'logs'}", "logger=none", *TINY, "trainer.max_steps=100000",
            "trainer.val_check_interval=100000", "callbacks.model_checkpoint.every_n_train_steps=100000",
            "callbacks.sample_grid.every_n_steps=0", *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_preempted_generator_saves_its_step_and_the_requeued_job_continues(tmp_path: Path):
    out = tmp_path / "run"
    job = generator_run(out)
    lines = []
    for line in job.stdout:  # training has started when the callback says what it listens for
        lines.append(line)
        if "saved after the current step (preemption)" in line:
            break
    time.sleep(2)  # a few steps
    job.send_signal(signal.SIGUSR1)
    lines += job.stdout.readlines()
    assert job.wait(timeout=120) == -signal.SIGUSR1, "".join(lines)[
        -3000:
    ]  # ended by the signal, for a requeue
    last = out / "checkpoints" / "last.ckpt"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step > 0 and "SIGUSR1 at step" in "".join(lines)  # the periodic checkpoint would be at step 0
    assert not list(last.parent.glob(".*"))  # saved atomically: no temporary file left
    resumed = generator_run(out, "auto_resume=true", "trainer.max_steps=" + str(step + 2))
    said = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, said[-3000:]
    assert (
        json.loads((out / "metrics.json").read_text())["global_step"] == step + 2
    )  # two more, not step + 2 anew
