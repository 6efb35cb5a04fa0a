"""The ``fetalgen-export`` task: a training checkpoint to a plain state dict (or ONNX, or a diffusers folder) with its model card."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fetalgen.export import MODEL_CARD, export_generator, export_sam, export_sam_onnx, model_card
from fetalgen.tasks.common import output_dir, task_wrapper
from fetalgen.utils.checkpoints import WRITERS, read_run_checkpoint

log = logging.getLogger(__name__)


@task_wrapper
def export(cfg: DictConfig) -> dict[str, str]:
    """Export ``cfg.ckpt_path`` into ``cfg.out`` (the module doc); returns ``{"kind", "model", "card"}``."""
    ckpt_path = Path(cfg.ckpt_path)
    checkpoint = read_run_checkpoint(ckpt_path)
    kind = checkpoint.task
    fmt = cfg.get("format") or "pytorch"
    if fmt not in ("pytorch", "onnx") or (fmt == "onnx" and kind != "finetune"):
        raise ValueError(
            f"format={fmt} is not available for a {WRITERS[kind]} checkpoint (pytorch; onnx for SAM)"
        )
    out = Path(cfg.out) if cfg.get("out") else output_dir(cfg) / "export"
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new out= folder (two exports would mix)")
    out.mkdir(parents=True, exist_ok=True)
    if kind == "finetune":
        exported = export_sam_onnx(ckpt_path, out) if fmt == "onnx" else export_sam(checkpoint, out)
    else:
        exported = export_generator(ckpt_path, out)
    card = out / MODEL_CARD
    card.write_text(model_card(checkpoint, exported, fmt))
    log.info("exported %s -> %s (model card %s)", ckpt_path, exported, card)
    return {"kind": kind, "model": str(exported), "card": str(card)}
