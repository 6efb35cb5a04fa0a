"""The ``fetalgen-evaluate`` task: a checkpoint (or raw SAM weights) on one evaluation set, beside the box-ellipse baseline."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from fetalgen.data.cases import Case
from fetalgen.data.provenance import check_no_leak
from fetalgen.evaluation.engine import EvalSettings, evaluate_sets
from fetalgen.segmentation.build import PACKAGED_WEIGHTS, PRETRAINED
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.tasks.build import eval_source, load_module
from fetalgen.tasks.common import build, output_dir, task_wrapper
from fetalgen.utils.device import resolve_device
from fetalgen.utils.files import write_json

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a checkpoint (or raw/random SAM) on ``cfg.eval_data``; returns flat ``eval/<name>/...`` metrics."""
    out, about, source = output_dir(cfg), _describe(cfg), eval_source(cfg.eval_data)
    evaluation: EvalSettings = build(cfg.eval)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    module, train_cfg, provenance = load_module(
        cfg.get("model"), cfg.get("ckpt_path"), cfg.allow_random_weights
    )
    test = source.load((train_cfg or {}).get("data", {}).get("image_size") or 256)  # the size it trained at
    check_lineage(provenance, cfg.get("ckpt_path"), test.name, test.cases)
    metrics = {f"eval/{test.name}/n_skipped": float(len(test.skipped))}
    predictor = SamBoxPredictor(module, resolve_device(cfg.get("device")))
    metrics |= evaluate_sets(
        predictor, [test], out, "eval", evaluation.for_model(module.hparams), info={"checkpoint": about}
    )
    write_json(out / "metrics.json", metrics)
    return metrics


def check_lineage(
    provenance: dict[str, Any] | None, ckpt_path: str | None, name: str, cases: list[Case]
) -> None:
    """Refuse to evaluate a fine-tuned model on cases that it, or the generator of its synthetic pairs, saw
    (``provenance``: the record of its checkpoint, :class:`~fetalgen.segmentation.predictor.LoadedModel`)."""
    if provenance is None:
        if ckpt_path:
            log.warning(
                "%s lists no training cases (older fetalgen): test leakage cannot be ruled out", ckpt_path
            )
        return
    seen = list(provenance.get("training_cases") or []) + list(provenance.get("generator_cases") or [])
    check_no_leak(
        seen,
        {f"evaluation set {name!r}": cases},
        model=f"the model of {ckpt_path} (or the generator of its synthetic pairs)",
        fix="evaluate on cases outside its training pool (e.g. the test.txt of its fetalgen-split)",
    )


def _describe(cfg: DictConfig) -> str:
    """What was evaluated: the checkpoint path, the raw SAM weights (packaged ones: zero-shot), or a random init."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    weights = OmegaConf.select(cfg, "model.sam.checkpoint")
    model_type = OmegaConf.select(cfg, "model.sam.model_type")
    if weights == PRETRAINED:
        return f"{model_type} pretrained weights, zero-shot ({PACKAGED_WEIGHTS[model_type].requirement})"
    return str(weights) if weights else f"random init ({model_type})"
