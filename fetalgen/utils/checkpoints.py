"""Lightning checkpoints of fetalgen: one record of the run in every checkpoint of both training tasks (its resolved
config and what it trained on), read safely (``weights_only=True``) with a check of which task wrote them, and a
best checkpoint that survives a resume into another run folder."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)

WRITERS = {"diffusion": "fetalgen-train-diffusion", "finetune": "fetalgen-finetune"}
CONFIG_KEY = "fetalgen_config"  # the resolved run config, in the checkpoints of both training tasks


class RunRecord(Callback):
    """Writes the run's record into every checkpoint Lightning saves: ``entries`` (the resolved config under
    :data:`CONFIG_KEY`, the provenance under ``fetalgen.data.provenance.CHECKPOINT_KEY``), the same way for the
    generator and for SAM. The modules themselves store only what rebuilds them."""

    def __init__(self, entries: dict[str, Any]) -> None:
        self.entries = dict(entries)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint.update(self.entries)


def run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved run config a checkpoint carries (None when it has none); generator checkpoints of fetalgen
    before the run record kept it in ``hyper_parameters["config"]``."""
    config = checkpoint.get(CONFIG_KEY)
    if config is None:
        config = (checkpoint.get("hyper_parameters") or {}).get("config")
    return config


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or was written by another task than the one reading it."""


def checkpoint_kind(checkpoint: Any) -> str | None:
    """``diffusion``, ``finetune`` or None (not a fetalgen Lightning checkpoint)."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None
    if "fetalgen" in checkpoint:
        return "diffusion"
    if CONFIG_KEY in checkpoint or any(k.startswith("sam.") for k in checkpoint["state_dict"]):
        return "finetune"
    return None


def read_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that cannot be read so is a one-line
    :class:`CheckpointError` naming it (truncated, corrupt, or holding objects other than tensors and plain data)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint with weights_only=True ({reason})"
        ) from None


def load_checkpoint(path: str | Path, expected: str) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded on the CPU with ``weights_only=True`` (no code runs from the file).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable (truncated, corrupt, or holding objects other than tensors and plain
            data), or written by another task than ``expected`` (``diffusion`` or ``finetune``); one line
            naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    checkpoint = read_weights(path)
    kind = checkpoint_kind(checkpoint)
    if kind != expected:
        what = f"a {WRITERS[kind]} checkpoint" if kind else "not a fetalgen checkpoint"
        raise CheckpointError(f"{path}: {what}, but this needs a {WRITERS[expected]} checkpoint")
    return checkpoint


class KeepBestOnResume(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose best checkpoints and score survive a resume into another folder.

    Lightning keeps the best score only when the resumed run writes to the same ``dirpath``; every Hydra run has
    its own folder, so it would forget the best before the interruption. This copies the best checkpoint(s) of
    the interrupted run into the new folder and keeps their scores: the final best is the best of all training.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if self.dirpath is None or old_dir is None or Path(old_dir) == Path(self.dirpath):
            super().load_state_dict(state_dict)
            return
        moved: dict[str, str] = {}
        for path in state_dict.get("best_k_models", {}):
            source = Path(path)
            if not source.is_file():
                log.warning(
                    "resume: the best checkpoint so far, %s, is gone; the best of this run is chosen among the "
                    "checkpoints written after the resume",
                    source,
                )
                super().load_state_dict(state_dict)
                return
            moved[path] = str(copy_into(source, Path(self.dirpath)))
        log.info("resume: best checkpoint(s) of %s copied into %s with their scores", old_dir, self.dirpath)
        super().load_state_dict(
            state_dict
            | {
                "dirpath": self.dirpath,
                "best_k_models": {moved[p]: v for p, v in state_dict["best_k_models"].items()},
                "best_model_path": moved.get(state_dict.get("best_model_path", ""), ""),
                "kth_best_model_path": moved.get(state_dict.get("kth_best_model_path", ""), ""),
                "last_model_path": "",
            }
        )


def copy_into(source: Path, folder: Path) -> Path:
    """Copy ``source`` into ``folder`` (same name) through a temporary file, so no reader sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if not target.exists():
        tmp = folder / f".{source.name}.{os.getpid()}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return target
