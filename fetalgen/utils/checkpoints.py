"""Read a Lightning checkpoint of fetalgen safely (``weights_only=True``) and check which task wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WRITERS = {"diffusion": "fetalgen-train-diffusion", "finetune": "fetalgen-finetune"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or was written by another task than the one reading it."""


def checkpoint_kind(checkpoint: Any) -> str | None:
    """``diffusion``, ``finetune`` or None (not a fetalgen Lightning checkpoint)."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None
    if "fetalgen" in checkpoint:
        return "diffusion"
    if "fetalgen_config" in checkpoint or any(k.startswith("sam.") for k in checkpoint["state_dict"]):
        return "finetune"
    return None


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
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or unsafe pickle
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint with weights_only=True ({reason})"
        ) from None
    kind = checkpoint_kind(checkpoint)
    if kind != expected:
        what = f"a {WRITERS[kind]} checkpoint" if kind else "not a fetalgen checkpoint"
        raise CheckpointError(f"{path}: {what}, but this needs a {WRITERS[expected]} checkpoint")
    return checkpoint
