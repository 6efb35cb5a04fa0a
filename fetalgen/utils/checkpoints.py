"""Lightning checkpoints of fetalgen, one contract both ways: one writer of the run record (:class:`RunRecord`: the
task, the builder that rebuilds its model, its resolved config and what it trained on), one reader
(:func:`read_run_checkpoint`: ``weights_only=True``, the task checked) and one :func:`rebuild` (the recorded builder,
if it is one of :data:`BUILDERS`), used by every task; and a best checkpoint that survives a resume into another
run folder."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)

WRITERS = {"diffusion": "fetalgen-train-diffusion", "finetune": "fetalgen-finetune"}
# The run record every checkpoint of both training tasks carries (written by RunRecord, read by read_run_checkpoint):
TASK_KEY = "fetalgen_task"  # which task wrote it: a key of WRITERS
# which class rebuilds it: a key of BUILDERS[task] (the module's builder_key)
BUILDER_KEY = "fetalgen_builder"
CONFIG_KEY = "fetalgen_config"  # the resolved run config
PROVENANCE_KEY = "fetalgen_provenance"  # {"training_cases": [...], "generator_cases": [...]}
# The one builder per class that rebuilds a model from its checkpoint (``builder(record, **kwargs)``), by task and
# builder key; nothing a checkpoint names is imported or instantiated beyond these.
BUILDERS = {
    "finetune": {"sam": "fetalgen.segmentation.predictor.sam_from_checkpoint"},
    "diffusion": {
        "joint": "fetalgen.diffusion.checkpoint.unet_from_checkpoint",
        "mask_conditioned": "fetalgen.diffusion.checkpoint.unet_from_checkpoint",
        "paper_lora": "fetalgen.diffusion.checkpoint.paper_lora_from_checkpoint",
    },
}


def record_entries(task: str, config: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """The run record's entries (the one place its keys are written; the builder key comes from the module)."""
    if task not in WRITERS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(WRITERS)}")
    return {TASK_KEY: task, CONFIG_KEY: config, PROVENANCE_KEY: provenance}


class RunRecord(Callback):
    """Writes the run record into every checkpoint Lightning saves (:func:`record_entries`: the task, the
    resolved config, the provenance, and the module's ``builder_key``), the same way for the generator and for SAM.
    The modules themselves store only what rebuilds them."""

    def __init__(self, task: str, config: dict[str, Any], provenance: dict[str, Any]) -> None:
        self.task = task
        self.entries = record_entries(task, config, provenance)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint.update(self.entries)
        key = getattr(pl_module, "builder_key", None)
        if key not in BUILDERS[self.task]:
            raise CheckpointError(f"{type(pl_module).__name__} names no builder of {WRITERS[self.task]} "
                                  f"checkpoints (builder_key={key!r}; known: {', '.join(BUILDERS[self.task])})")  # fmt: skip
        checkpoint[BUILDER_KEY] = key


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or was written by another task than the one reading it."""


def checkpoint_kind(checkpoint: Any) -> str | None:
    """``diffusion``, ``finetune`` or None (not a fetalgen Lightning checkpoint): the recorded task, else (files
    written before the task was recorded) what their keys show."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None
    if checkpoint.get(TASK_KEY) in WRITERS:
        return checkpoint[TASK_KEY]
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


@dataclass(frozen=True)
class RunCheckpoint:
    """A fetalgen training checkpoint as read by :func:`read_run_checkpoint`: the task that wrote it, its record
    and the whole loaded dict (``contents``: state dict, optimizer, callbacks, ... as Lightning saved them)."""

    path: Path
    task: str
    contents: dict[str, Any]

    @property
    def state_dict(self) -> dict[str, Any]:
        return self.contents["state_dict"]

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved run config (None when the file has none); generator checkpoints written before the run
        record kept it in ``hyper_parameters["config"]``."""
        config = self.contents.get(CONFIG_KEY)
        if config is None:
            config = (self.contents.get("hyper_parameters") or {}).get("config")
        return config

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self.contents.get(PROVENANCE_KEY)

    @property
    def builder_key(self) -> Any:
        """The recorded builder key; for files written before it was recorded, the one their entries imply (a
        fine-tune: ``sam``; a generator: the kind its description records, ``joint`` before that was recorded)."""
        if BUILDER_KEY in self.contents:
            return self.contents[BUILDER_KEY]
        if self.task == "finetune":
            return "sam"
        described = self.contents.get("fetalgen")
        return described.get("generator", "joint") if isinstance(described, dict) else "joint"

    @property
    def builder(self) -> str:
        """The function that rebuilds this checkpoint's model (:data:`BUILDERS`).

        Raises:
            CheckpointError: the file names a builder fetalgen does not know for its task (anything but a plain
                string of :data:`BUILDERS` is refused, never imported).
        """
        key, known = self.builder_key, BUILDERS[self.task]
        if not isinstance(key, str) or key not in known:
            raise CheckpointError(f"{self.path}: names the builder {str(key)[:80]!r}, which no "
                                  f"{WRITERS[self.task]} checkpoint has (known: {', '.join(known)}): refused")  # fmt: skip
        return known[key]


def rebuild(path: str | Path, task: str | None = None, **kwargs: Any) -> Any:
    """The model of a fetalgen checkpoint, rebuilt by the one builder its record names (:data:`BUILDERS`), from the
    file read once with ``weights_only=True`` (:func:`read_run_checkpoint`, ``task`` checked); ``kwargs`` go to
    the builder (e.g. ``device``). What it returns is the builder's (a generator: ``(unet, scheduler_config,
    meta)``; SAM: a ``LoadedModel``)."""
    record = read_run_checkpoint(path, task)
    module, name = record.builder.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(record, **kwargs)


def read_run_checkpoint(path: str | Path, task: str | None = None) -> RunCheckpoint:
    """The one reader of fetalgen's training checkpoints: loaded on the CPU with ``weights_only=True`` (no code
    runs from the file), the task that wrote it checked against ``task`` (None: either task).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable (truncated, corrupt, or holding objects other than tensors and plain
            data), not a fetalgen checkpoint, or written by another task than ``task``; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    contents = read_weights(path)
    kind = checkpoint_kind(contents)
    if kind is None or (task is not None and kind != task):
        what = f"a {WRITERS[kind]} checkpoint" if kind else "not a fetalgen checkpoint"
        needed = WRITERS[task] if task else "fetalgen-finetune or fetalgen-train-diffusion"
        raise CheckpointError(f"{path}: {what}, but this needs a {needed} checkpoint")
    return RunCheckpoint(path, kind, contents)


RESTORED_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


def own_checkpoint_paths(state: dict[str, Any], folder: Path, task: str | None) -> dict[str, Any]:
    """``state`` of a ``ModelCheckpoint`` with only the paths it may later delete kept: files directly in ``folder``
    that are fetalgen checkpoints of ``task`` (a crafted resume file could name ``<dirpath>/../../x``)."""

    def own(path: Any) -> bool:
        if not isinstance(path, str) or not path:
            return False
        candidate = Path(path)
        if candidate.resolve().parent != folder.resolve() or not candidate.is_file():
            return False
        try:
            read_run_checkpoint(candidate, task)
        except (CheckpointError, FileNotFoundError):
            return False
        return True

    out = dict(state)
    dropped = [p for p in state.get("best_k_models", {}) if not own(p)]
    dropped += [state[k] for k in RESTORED_PATHS if state.get(k) and not own(state[k])]
    out["best_k_models"] = {p: v for p, v in state.get("best_k_models", {}).items() if own(p)}
    for key in RESTORED_PATHS:
        out[key] = state.get(key) if own(state.get(key)) else ""
    if dropped:
        log.warning("resume: checkpoint paths outside %s or not fetalgen checkpoints are not restored (never "
                    "deleted): %s", folder, ", ".join(map(str, sorted(set(dropped))))[:500])  # fmt: skip
    return out


class OwnCheckpoints(ModelCheckpoint):
    """A ``ModelCheckpoint`` that restores from a resumed checkpoint only paths of its own folder holding fetalgen
    checkpoints of ``task`` (:func:`own_checkpoint_paths`): the ones it may delete when it saves a better one."""

    def __init__(self, *args: Any, task: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath is not None:
            state_dict = own_checkpoint_paths(state_dict, Path(self.dirpath), self.task)
        super().load_state_dict(state_dict)


class KeepBestOnResume(OwnCheckpoints):
    """A ``ModelCheckpoint`` whose best checkpoints and score survive a resume into another folder.

    Lightning keeps the best score only when the resumed run writes to the same ``dirpath``; every Hydra run has
    its own folder, so it would forget the best before the interruption. This copies the best checkpoint(s) of
    the interrupted run into the new folder and keeps their scores: the final best is the best of all training.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, task="finetune", **kwargs)

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
            try:  # only a fine-tuning checkpoint is copied (a crafted record could name any readable file)
                read_run_checkpoint(source, "finetune")
            except (CheckpointError, FileNotFoundError) as err:
                raise CheckpointError(f"resume: the recorded best checkpoint is refused: {err}") from None
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
