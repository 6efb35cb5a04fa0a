"""A fine-tuned SAM rebuilt from the plain values its checkpoint stores; nothing named in a file is instantiated.

A ``fetalgen-finetune`` checkpoint records its resolved model config. Only the settings that shape the model are
read from it (:data:`SAM_FIELDS`, :data:`MODULE_FIELDS`), each checked for its type and range, and the module is
built by this code (``build_sam`` + :class:`SamFinetuneModule`). Whatever else the section holds (``_target_``,
optimizer, cache) is never built, so no container type, callable name or interpolation in a file can run code.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fetalgen.segmentation.build import MODEL_TYPES, TRAINABLE, build_sam
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.prompts import BOX_MODES
from fetalgen.utils.checkpoints import CheckpointError

MAX_SIDE = 4096  # the largest encoder input or loss side a stored config may ask for

# name: (type, allowed values or (low, high), may be null)
SAM_FIELDS: dict[str, tuple[type, Any, bool]] = {
    "model_type": (str, MODEL_TYPES, False),
    "image_size": (int, (16, MAX_SIDE), False),
}
MODULE_FIELDS: dict[str, tuple[type, Any, bool]] = {
    "trainable": (str, TRAINABLE, False),
    "lora_rank": (int, (1, 256), False),
    "lora_alpha": (float, (0.0, 1e4), True),
    "dice_weight": (float, (0.0, 1e3), False),
    "bce_weight": (float, (0.0, 1e3), False),
    "loss_resolution": (int, (4, MAX_SIDE), True),
    "train_prompt": (str, BOX_MODES, False),
    "eval_prompt": (str, BOX_MODES, False),
    "max_jitter_px": (int, (0, MAX_SIDE), False),
    "jitter_ref_size": (int, (1, MAX_SIDE), False),
    "full_box_share": (float, (0.0, 1.0), False),
    "seed": (int, (0, 2**63 - 1), False),
}


def plain_value(value: Any, kind: type, allowed: Any, nullable: bool, where: str, source: str | Path) -> Any:
    """``value`` if it is a plain ``kind`` within ``allowed`` (a tuple of choices, or ``(low, high)`` for numbers),
    else :class:`CheckpointError` naming the file and the field."""
    if value is None and nullable:
        return None
    if kind is float and type(value) is int:
        value = float(value)
    ok = type(value) is kind
    if ok and kind is str:
        ok = value in allowed
    elif ok:
        low, high = allowed
        ok = (kind is int or math.isfinite(value)) and low <= value <= high
    if not ok:
        shown = repr(value)[:80]
        want = (
            f"one of {', '.join(allowed)}"
            if kind is str
            else f"a {kind.__name__} in [{allowed[0]}, {allowed[1]}]"
        )
        raise CheckpointError(
            f"{source}: its stored config has {where} = {shown}, not {want}; refused, nothing built"
        )
    return value


def stored_settings(
    section: Any, fields: dict[str, tuple[type, Any, bool]], where: str, source: str | Path
) -> dict:
    """The ``fields`` present in a stored config ``section`` (a dict), each checked by :func:`plain_value`."""
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{source}: its stored config has no {where} section (got {type(section).__name__})"
        )
    return {
        name: plain_value(section[name], *spec, f"{where}.{name}", source)
        for name, spec in fields.items()
        if name in section
    }


def rebuild_module(model: Any, source: str | Path) -> SamFinetuneModule:
    """The :class:`SamFinetuneModule` a stored ``model`` config describes, random-initialised (the caller loads the
    checkpoint's weights), without its cache; built from checked plain values only (module doc)."""
    sam_settings = stored_settings(model.get("sam") if isinstance(model, dict) else None, SAM_FIELDS, "model.sam",
                                   source)  # fmt: skip
    if "model_type" not in sam_settings:
        raise CheckpointError(f"{source}: its stored config names no model.sam.model_type")
    settings = stored_settings(model, MODULE_FIELDS, "model", source)
    sam = build_sam(sam_settings["model_type"], image_size=sam_settings.get("image_size", 1024), seed=0)
    return SamFinetuneModule(sam, optimizer=partial(torch.optim.AdamW), **settings)
