"""What the tasks build from their config groups: evaluation sources (``eval_data``) and SAM modules (``model``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from fetalgen.data.sources import EvalSource
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import LoadedModel, load_finetuned, require_weights
from fetalgen.tasks.common import build

log = logging.getLogger(__name__)


def eval_source(spec: Mapping[str, Any]) -> EvalSource:
    """The :class:`~fetalgen.data.sources.EvalSource` an ``eval_data`` config builds (``conf/eval_data/``)."""
    if "_target_" not in spec or "_target_" not in (spec.get("source") or {}):
        raise ValueError(
            "an evaluation set is a conf/eval_data/ config (a _target_ and a source with a _target_, its reader), "
            f"got {dict(spec)}"
        )
    return build(spec)


def eval_sources(specs: Mapping[str, Any] | None) -> dict[str, EvalSource | None]:
    """``fetalgen-finetune``'s ``test_sets``: each ``eval_data`` config built (a null entry stays None)."""
    return {key: None if spec is None else eval_source(spec) for key, spec in (specs or {}).items()}


def load_module(
    model_cfg: DictConfig | None, ckpt_path: str | Path | None = None, allow_random_weights: bool = False
) -> LoadedModel:
    """The module to predict with, and the training run's config and provenance when it comes from a checkpoint.

    ``ckpt_path``: a ``fetalgen-finetune`` checkpoint, rebuilt by :func:`~fetalgen.segmentation.predictor.load_finetuned`
    (``model_cfg`` only for a file that carries no config). Without ``ckpt_path``, ``model_cfg`` is built as is: SAM
    weights via ``model.sam.checkpoint`` (``pretrained`` for the packaged LiteMedSAM), or, with
    ``allow_random_weights``, a random-init model (:func:`~fetalgen.segmentation.predictor.require_weights`).
    """
    if ckpt_path is None:
        if model_cfg is None:
            raise ValueError("no model: give ckpt_path or a model config")
        require_weights(None, (model_cfg.get("sam") or {}).get("checkpoint"), allow_random_weights)
        return LoadedModel(hydra.utils.instantiate(model_cfg), None, None)

    def from_command_line() -> SamFinetuneModule:  # the user's own model config, not the file's
        cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
        with open_dict(cfg):
            cfg.sam.checkpoint = None  # the weights come from the checkpoint
            cfg.cache = None
        return hydra.utils.instantiate(cfg)

    return load_finetuned(ckpt_path, from_command_line if model_cfg is not None else None)
