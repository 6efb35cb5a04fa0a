"""What the tasks build from their config groups: evaluation sets (``eval_data``) and SAM modules (``model``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from fetalgen.data.sources import EvalSet
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import LoadedModel, load_finetuned, require_weights

log = logging.getLogger(__name__)


def source_root(spec: Mapping[str, Any]) -> str | None:
    """The folder an ``eval_data`` config reads (None for a reader without one)."""
    root = (spec.get("source") or {}).get("root")
    return None if root is None else str(root)


def load_eval_set(spec: Mapping[str, Any], image_size: int) -> EvalSet:
    """Read and load the set an ``eval_data`` config names: ``{name, image_size, on_bad_pair, source}``.

    Args:
        spec: the config (``source`` is instantiated: ``_target_`` returns the cases).
        image_size: the working side when the config leaves ``image_size`` null (the model's).
    """
    if "source" not in spec or "_target_" not in (spec.get("source") or {}):
        raise ValueError(
            f"an evaluation set needs a source with a _target_ (a reader, see conf/eval_data/), got {dict(spec)}"
        )
    cases = hydra.utils.instantiate(spec["source"], _convert_="all")
    size = int(spec.get("image_size") or image_size)
    name = spec.get("name") or "eval"
    return EvalSet.of(name, cases, size, spec.get("on_bad_pair") or "raise", source_root(spec) or "")


def build_test_sets(
    specs: Mapping[str, Any] | None, datamodule: Any, image_size: int, test_split: bool = True
) -> list[EvalSet]:
    """The data module's own test split (named by its cohort, when ``num_test > 0`` and ``test_split`` is on)
    and every ``eval_data`` config of ``specs`` (``cfg.test_sets``) whose root exists, loaded."""
    sets: list[EvalSet] = []
    if test_split and datamodule.test_cases:
        datamodule.setup("test")  # loads the splits once; fit reuses them
        cohort = datamodule.test_cases[0].cohort or "test"
        sets.append(EvalSet(cohort, datamodule.test_set, where="the test split of the training data"))
    for key, spec in (specs or {}).items():
        if spec is None:
            continue
        root = source_root(spec)
        if root is not None and not Path(root).exists():
            log.info(
                "test set %r skipped: %s does not exist (set its root, e.g. paths.%s_dir)", key, root, key
            )
            continue
        sets.append(load_eval_set({**spec, "name": key}, image_size))
    return sets


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
