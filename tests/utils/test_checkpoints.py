"""Checkpoints are read with weights_only=True, and a wrong, truncated or unsafe file gets one clear line."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from fetalgen.utils.checkpoints import (
    CheckpointError,
    KeepBestOnResume,
    OwnCheckpoints,
    RunRecord,
    checkpoint_kind,
    read_run_checkpoint,
)

FINETUNE = {"state_dict": {"sam.mask_decoder.w": torch.zeros(2)}, "fetalgen_config": {"model": {}}}
DIFFUSION = {"state_dict": {"unet.w": torch.zeros(2)}, "fetalgen": {"image_size": 32}}


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_kinds(tmp_path: Path) -> None:
    assert checkpoint_kind(FINETUNE) == "finetune" and checkpoint_kind(DIFFUSION) == "diffusion"
    assert checkpoint_kind({"model": 1}) is None
    torch.save(FINETUNE, tmp_path / "f.ckpt")
    read = read_run_checkpoint(tmp_path / "f.ckpt", "finetune")
    assert read.config == {"model": {}} and read.task == "finetune" and read.provenance is None
    assert read.builder == "fetalgen.segmentation.predictor.load_finetuned"
    assert read_run_checkpoint(tmp_path / "f.ckpt").task == "finetune"  # either task


def test_one_writer_records_the_task_which_wins_over_the_keys(tmp_path: Path) -> None:
    checkpoint = {"state_dict": {"sam.x": torch.zeros(1)}}  # keys that look like fine-tuning
    RunRecord("diffusion", {"seed": 0}, {"training_cases": []}).on_save_checkpoint(None, None, checkpoint)
    assert checkpoint["fetalgen_task"] == "diffusion" and checkpoint_kind(checkpoint) == "diffusion"
    torch.save(checkpoint, tmp_path / "g.ckpt")
    read = read_run_checkpoint(tmp_path / "g.ckpt", "diffusion")
    assert read.config == {"seed": 0} and read.provenance == {"training_cases": []}
    with pytest.raises(ValueError, match="unknown task 'sample'"):
        RunRecord("sample", {}, {})


def test_a_resume_copies_only_fine_tuning_checkpoints(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("a file a crafted checkpoint names as its best")
    callback = KeepBestOnResume(dirpath=tmp_path / "new", monitor="val/dice", mode="max")
    state = {"dirpath": str(tmp_path / "old"), "best_k_models": {str(secret): torch.tensor(0.9)},
             "best_model_path": str(secret), "best_model_score": torch.tensor(0.9)}  # fmt: skip
    with pytest.raises(CheckpointError, match="resume: the recorded best checkpoint is refused"):
        callback.load_state_dict(state)
    assert not (tmp_path / "new" / "secret.txt").exists()
    torch.save(FINETUNE, tmp_path / "best.ckpt")
    callback.load_state_dict(state | {"best_k_models": {str(tmp_path / "best.ckpt"): torch.tensor(0.9)},
                                      "best_model_path": str(tmp_path / "best.ckpt")})  # fmt: skip
    assert (tmp_path / "new" / "best.ckpt").is_file() and callback.best_model_path == str(
        tmp_path / "new" / "best.ckpt"
    )


def test_wrong_kind_truncated_missing_and_unsafe_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save(DIFFUSION, tmp_path / "d.ckpt")
    with pytest.raises(
        CheckpointError,
        match=r"d.ckpt: a fetalgen-train-diffusion checkpoint, but this needs a fetalgen-finetune",
    ):
        read_run_checkpoint(tmp_path / "d.ckpt", "finetune")
    data = (tmp_path / "d.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"cut.ckpt: cannot be read as a checkpoint with weights_only=True"
    ):
        read_run_checkpoint(tmp_path / "cut.ckpt", "diffusion")
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt: checkpoint not found"):
        read_run_checkpoint(tmp_path / "nowhere.ckpt", "diffusion")
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": {}, "x": Boom()}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # weights_only=True is passed explicitly
    with pytest.raises(CheckpointError, match="evil.ckpt: cannot be read"):
        read_run_checkpoint(tmp_path / "evil.ckpt", "finetune")
    assert not (tmp_path / "PWNED").exists()


def test_a_crafted_resume_restores_no_path_outside_the_run_folder(tmp_path: Path) -> None:
    # Lightning deletes a restored best_k_models / kth_best / last path at the next save: a crafted resume file
    # naming <dirpath>/../../victim would delete it. Only the folder's own fetalgen checkpoints are restored.
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("not a checkpoint")
    own = folder / "best_step_000010.ckpt"
    torch.save(FINETUNE, own)
    torch.save(FINETUNE, tmp_path / "elsewhere.ckpt")
    outside = str(folder / ".." / ".." / "victim.txt")
    for callback in (
        OwnCheckpoints(dirpath=folder, task="finetune", monitor=None),
        KeepBestOnResume(dirpath=folder, monitor="val/dice", mode="max"),
    ):
        state = {"dirpath": str(folder), "best_model_score": torch.tensor(0.9), "kth_value": torch.tensor(0.8),
                 "best_k_models": {outside: torch.tensor(0.9), str(own): torch.tensor(0.8),
                                   str(tmp_path / "elsewhere.ckpt"): torch.tensor(0.7)},
                 "best_model_path": outside, "kth_best_model_path": str(victim), "last_model_path": outside}  # fmt: skip
        callback.load_state_dict(state)
        assert list(callback.best_k_models) == [str(own)]
        assert callback.best_model_path == callback.kth_best_model_path == callback.last_model_path == ""
    assert victim.read_text() == "not a checkpoint"
