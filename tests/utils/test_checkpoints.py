"""Checkpoints are read with weights_only=True, and a wrong, truncated or unsafe file gets one clear line."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from fetalgen.utils.checkpoints import CheckpointError, checkpoint_kind, load_checkpoint

FINETUNE = {"state_dict": {"sam.mask_decoder.w": torch.zeros(2)}, "fetalgen_config": {"model": {}}}
DIFFUSION = {"state_dict": {"unet.w": torch.zeros(2)}, "fetalgen": {"image_size": 32}}


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_kinds(tmp_path: Path) -> None:
    assert checkpoint_kind(FINETUNE) == "finetune" and checkpoint_kind(DIFFUSION) == "diffusion"
    assert checkpoint_kind({"model": 1}) is None
    torch.save(FINETUNE, tmp_path / "f.ckpt")
    assert load_checkpoint(tmp_path / "f.ckpt", "finetune")["fetalgen_config"] == {"model": {}}


def test_wrong_kind_truncated_missing_and_unsafe_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save(DIFFUSION, tmp_path / "d.ckpt")
    with pytest.raises(
        CheckpointError,
        match=r"d.ckpt: a fetalgen-train-diffusion checkpoint, but this needs a fetalgen-finetune",
    ):
        load_checkpoint(tmp_path / "d.ckpt", "finetune")
    data = (tmp_path / "d.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"cut.ckpt: cannot be read as a checkpoint with weights_only=True"
    ):
        load_checkpoint(tmp_path / "cut.ckpt", "diffusion")
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere.ckpt", "diffusion")
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": {}, "x": Boom()}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # weights_only=True is passed explicitly
    with pytest.raises(CheckpointError, match="evil.ckpt: cannot be read"):
        load_checkpoint(tmp_path / "evil.ckpt", "finetune")
    assert not (tmp_path / "PWNED").exists()
