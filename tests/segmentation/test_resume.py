"""Resuming fetalgen-finetune: last.ckpt is the latest state, the best survives, a resumed run equals an
uninterrupted one (kill -9 mid-epoch, resume into a new run folder)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fetalgen.utils.checkpoints import KeepBestOnResume

CRASH_CALLBACK = '''
import os, signal
import pytorch_lightning as pl

class KillAtStep(pl.Callback):
    """SIGKILL this process once training reached ``step`` (no clean-up, as a crash or an OOM kill)."""
    def __init__(self, step):
        self.step = step
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def run_finetune(
    phantom_dir: Path, out: Path, *extra: str, env: dict[str, str] | None = None, every: int = 3
) -> int:
    """``fetalgen-finetune`` in its own process: 8 pairs in batches of 4 (2 steps an epoch), validation and
    last.ckpt every ``every`` steps (3: mid-epoch; 2: at epoch ends), 9 steps."""
    args = [
        sys.executable, "-m", "fetalgen.cli.finetune", f"hydra.run.dir={out}", f"paths.log_dir={out.parent / 'logs'}",
        "logger=none", "trainer.max_steps=9", f"trainer.val_check_interval={every}", "trainer.enable_progress_bar=false",
        f"data.source.root={phantom_dir}", "data.source.n=24", "data.source.shape=[135,200]", "data.num_real=8",
        "data.num_val=4", "data.num_test=0", "data.batch_size=4", "data.image_size=64", "model.sam.image_size=64",
        "model.train_prompt=jitter", "test_split=false", *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True).returncode


def trained_weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if "mask_decoder" in k}


@pytest.mark.slow
@pytest.mark.parametrize(("every", "last_step"), [(3, 3), (2, 4)], ids=["mid-epoch", "epoch-boundary"])
def test_a_killed_run_resumed_elsewhere_ends_as_an_uninterrupted_run(
    phantom_dir: Path, tmp_path, every: int, last_step: int
):
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "crash_at.py").write_text(CRASH_CALLBACK)

    assert run_finetune(phantom_dir, tmp_path / "whole", every=every) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    last = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 9 // every * every  # the latest validation, whether or not it improved

    crash = ["+callbacks.crash._target_=crash_at.KillAtStep", "+callbacks.crash.step=5"]
    assert (
        run_finetune(phantom_dir, tmp_path / "killed", *crash, env=env, every=every) == -9
    )  # SIGKILL at step 5
    killed_last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(killed_last, map_location="cpu", weights_only=True)["global_step"] == last_step

    assert run_finetune(phantom_dir, tmp_path / "resumed", f"ckpt_path={killed_last}", every=every) == 0
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["val/dice"] == whole["val/dice"] and resumed["train/steps"] == whole["train/steps"] == 9
    (best_whole,) = (tmp_path / "whole" / "checkpoints").glob("best_*.ckpt")
    (best_resumed,) = (tmp_path / "resumed" / "checkpoints").glob("best_*.ckpt")  # copied here if from step 3
    assert best_resumed.name == best_whole.name
    last_whole, last_resumed = (tmp_path / run / "checkpoints" / "last.ckpt" for run in ("whole", "resumed"))
    for first, second in (
        (best_whole, best_resumed),
        (last_whole, last_resumed),
    ):  # the last: trained after the kill
        a, b = trained_weights(first), trained_weights(second)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (first, second)


def test_the_best_checkpoint_and_score_follow_a_resume_into_another_folder(tmp_path: Path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    torch.save(
        {"state_dict": {"sam.w": torch.ones(1)}, "fetalgen_task": "finetune"}, old / "best_step_000003.ckpt"
    )
    state = {
        "monitor": "val/dice", "best_model_score": torch.tensor(0.73), "best_model_path": str(old / "best_step_000003.ckpt"),
        "current_score": torch.tensor(0.70), "dirpath": str(old), "kth_best_model_path": str(old / "best_step_000003.ckpt"),
        "best_k_models": {str(old / "best_step_000003.ckpt"): torch.tensor(0.73)}, "kth_value": torch.tensor(0.73),
        "last_model_path": "",
    }  # fmt: skip
    callback = KeepBestOnResume(dirpath=new, monitor="val/dice", mode="max")
    callback.load_state_dict(state)
    copied = new / "best_step_000003.ckpt"
    assert copied.read_bytes() == (old / "best_step_000003.ckpt").read_bytes()
    assert float(callback.best_model_score) == pytest.approx(0.73) and callback.best_model_path == str(copied)
    assert list(callback.best_k_models) == [str(copied)] and callback.kth_best_model_path == str(copied)

    # Plain Lightning forgets the score in a new folder: the reason for the subclass.
    from pytorch_lightning.callbacks import ModelCheckpoint

    plain = ModelCheckpoint(dirpath=tmp_path / "other", monitor="val/dice", mode="max")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        plain.load_state_dict(state)
    assert plain.best_model_score is None


@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_own_last_checkpoint(phantom_dir: Path, tmp_path):
    # A SLURM job preempted and requeued by the launcher runs the same command in the same folder: with
    # auto_resume=requeue (the default) it picks up its own last.ckpt and ends as an uninterrupted run.
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "crash_at.py").write_text(CRASH_CALLBACK)
    assert run_finetune(phantom_dir, tmp_path / "whole") == 0
    crash = ["+callbacks.crash._target_=crash_at.KillAtStep", "+callbacks.crash.step=5"]
    job = tmp_path / "job"
    assert run_finetune(phantom_dir, job, *crash, env=env) == -9
    assert run_finetune(phantom_dir, job, env=env | {"SLURM_RESTART_COUNT": "1"}) == 0
    whole, requeued = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "job"))
    assert requeued["val/dice"] == whole["val/dice"] and requeued["train/steps"] == 9
    a, b = (trained_weights(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "job"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resuming this run's own" in (job / "finetune.log").read_text()
