"""Checkpoints are read with weights_only=True, and a wrong, truncated or unsafe file gets one clear line."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fetalgen.utils.checkpoints import (
    CheckpointError,
    KeepBestOnResume,
    OwnCheckpoints,
    RunRecord,
    checkpoint_kind,
    read_run_checkpoint,
    rebuild,
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
    assert read.builder_key == "sam" and read.builder == "fetalgen.segmentation.predictor.sam_from_checkpoint"
    assert read_run_checkpoint(tmp_path / "f.ckpt").task == "finetune"  # either task


def test_one_writer_records_the_task_which_wins_over_the_keys(tmp_path: Path) -> None:
    checkpoint = {"state_dict": {"sam.x": torch.zeros(1)}}  # keys that look like fine-tuning
    generator = SimpleNamespace(builder_key="mask_conditioned")  # what a module names as its builder
    RunRecord("diffusion", {"seed": 0}, {"training_cases": []}).on_save_checkpoint(
        None, generator, checkpoint
    )
    assert checkpoint["fetalgen_task"] == "diffusion" and checkpoint_kind(checkpoint) == "diffusion"
    assert checkpoint["fetalgen_builder"] == "mask_conditioned"
    torch.save(checkpoint, tmp_path / "g.ckpt")
    read = read_run_checkpoint(tmp_path / "g.ckpt", "diffusion")
    assert read.config == {"seed": 0} and read.provenance == {"training_cases": []}
    with pytest.raises(ValueError, match="unknown task 'sample'"):
        RunRecord("sample", {}, {})
    with pytest.raises(CheckpointError, match="names no builder of fetalgen-finetune"):  # a generator as SAM
        RunRecord("finetune", {}, {}).on_save_checkpoint(None, generator, {"state_dict": {}})


@pytest.mark.parametrize(
    "builder", ["os.system", "builtins.exec", ("sam",), ["sam"], {"sam": 1}, 3, "paper_lora", "", None]
)
def test_rebuild_refuses_a_crafted_checkpoint_naming_any_other_builder(tmp_path: Path, builder) -> None:
    torch.save(
        FINETUNE | {"fetalgen_task": "finetune", "fetalgen_builder": builder}, tmp_path / "crafted.ckpt"
    )
    with pytest.raises(CheckpointError, match=r"crafted.ckpt: names the builder .*, which no fetalgen-finetune "
                                              r"checkpoint has \(known: sam\): refused"):  # fmt: skip
        rebuild(tmp_path / "crafted.ckpt")
    assert not Path("PWNED").exists()


def test_rebuild_dispatches_on_the_recorded_task_and_builder(tmp_path: Path, monkeypatch) -> None:
    calls = []
    fake = SimpleNamespace(**{name: (lambda record, name=name, **kw: calls.append((name, record.task, kw)) or name)
                              for name in ("sam_from_checkpoint", "unet_from_checkpoint", "paper_lora_from_checkpoint")})  # fmt: skip
    monkeypatch.setattr(
        "fetalgen.utils.checkpoints.importlib", SimpleNamespace(import_module=lambda module: fake)
    )
    cases = {"sam": FINETUNE, "mask_conditioned": DIFFUSION | {"fetalgen_builder": "mask_conditioned"},
             "joint": DIFFUSION, "paper_lora": DIFFUSION | {"fetalgen": {"generator": "paper_lora"}}}  # fmt: skip
    for key, contents in cases.items():  # the last two: older files, whose builder their description implies
        torch.save(contents, tmp_path / f"{key}.ckpt")
        assert read_run_checkpoint(tmp_path / f"{key}.ckpt").builder_key == key
    assert rebuild(tmp_path / "sam.ckpt", "finetune", device="cpu") == "sam_from_checkpoint"
    assert (
        rebuild(tmp_path / "mask_conditioned.ckpt")
        == rebuild(tmp_path / "joint.ckpt")
        == "unet_from_checkpoint"
    )
    assert rebuild(tmp_path / "paper_lora.ckpt", "diffusion") == "paper_lora_from_checkpoint"
    assert calls[0] == ("sam_from_checkpoint", "finetune", {"device": "cpu"})
    with pytest.raises(
        CheckpointError, match="a fetalgen-finetune checkpoint, but this needs a fetalgen-train"
    ):
        rebuild(tmp_path / "sam.ckpt", "diffusion")


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
