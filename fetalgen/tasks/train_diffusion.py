"""Task function: train the joint image-and-mask diffusion model (``fetalgen-train-diffusion``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig

from fetalgen.data.datamodule import PairDataModule
from fetalgen.data.provenance import TRAINING_CASES, case_records, write_training_cases
from fetalgen.diffusion.module import JointDiffusionModule
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.tasks.common import build_trainer, is_rank_zero, output_dir, resume_checkpoint, task_wrapper
from fetalgen.utils.checkpoints import read_run_checkpoint
from fetalgen.utils.files import write_json

log = logging.getLogger(__name__)


def fit_shape_prior(masks: list) -> dict[str, Any] | None:
    """The head-shape prior of the training masks (:class:`~fetalgen.diffusion.shape_prior.ShapePrior`), recorded
    in every checkpoint for mask-conditioned sampling; None (with a warning) when it cannot be fitted."""
    try:
        return ShapePrior.fit([np.asarray(m) > 0 for m in masks]).to_dict()
    except ValueError as err:
        log.warning("no head-shape prior recorded: %s", err)
        return None


def learn_from_unlabelled(datamodule: PairDataModule, model: JointDiffusionModule) -> None:
    """With unlabelled images (``data.unlabelled``), put them in the training batches beside the labelled pairs
    (:meth:`~fetalgen.data.datamodule.PairDataModule.train_dataloader`), for a model that can learn from them."""
    if not datamodule.unlabelled_cases:
        return
    if not model.learns_from_images:
        raise ValueError(f"data.unlabelled: the {model.generator_kind} generator learns masks, so it cannot train "
                         "on images without them; leave data.unlabelled unset or use generator=mask_conditioned")  # fmt: skip
    datamodule.unlabelled_in_batches = True
    datamodule.unlabelled_dataloader()  # read them now: a bad file fails before training
    log.info("The image model also learns from %d unlabelled images", len(datamodule.unlabelled_set))


@task_wrapper
def train_diffusion(cfg: DictConfig) -> dict[str, Any]:
    """Build data, model, callbacks, loggers and trainer from ``cfg``; fit (resuming from ``cfg.ckpt_path``).

    The training cases go to ``<output_dir>/training_cases.csv`` and into every checkpoint (provenance).

    Returns:
        The trainer's final metrics (``train/loss``, ``val/loss`` when validated, ...) as floats, plus
        ``global_step``, ``checkpoint`` (path of the last checkpoint, or None) and ``output_dir``; also
        written to ``<output_dir>/metrics.json``.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    out = output_dir(cfg)
    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: PairDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Instantiating model <%s>", cfg.model._target_)
    model: JointDiffusionModule = hydra.utils.instantiate(cfg.model)
    datamodule.setup("fit")  # load now: the cases listed are those trained on, skipped pairs left out
    if not len(datamodule.train_set):
        raise ValueError(
            "no training pair left (every one skipped as bad, or none chosen): nothing to train on"
        )
    learn_from_unlabelled(datamodule, model)
    records = case_records(datamodule.train_set.cases)
    if datamodule.unlabelled_in_batches:  # seen without their masks: counted apart, held to the leakage guard
        records += case_records(datamodule.unlabelled_set.cases, labelled=False)
    skipped = datamodule.skipped()
    if is_rank_zero():  # the run's files, once (the extra ranks of trainer=ddp run this function too)
        write_training_cases(out / TRAINING_CASES, records)
        log.info("Generator training cases (%d) listed in %s", len(records), out / TRAINING_CASES)
    if skipped and is_rank_zero():
        (out / "skipped.txt").write_text("".join(f"{line}\n" for line in skipped))
        log.warning("%d bad file(s) skipped, listed in %s", len(skipped), out / "skipped.txt")
    prior = fit_shape_prior(datamodule.train_set.masks)
    trainer, loggers = build_trainer(cfg, "diffusion", {"training_cases": records, "shape_prior": prior})
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, "diffusion"))

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = trainer.checkpoint_callback
    checkpoint = None
    if ckpt_cb is not None:
        checkpoint = getattr(ckpt_cb, "last_model_path", "") or ckpt_cb.best_model_path or None
        written = Path(ckpt_cb.dirpath or "") / "last.ckpt"  # trainer=ddp_cpu: the spawned ranks wrote it
        if checkpoint is None and ckpt_cb.dirpath and written.is_file():
            checkpoint = str(written)
    step = trainer.global_step
    if (
        not step and checkpoint
    ):  # trainer=ddp_cpu trained in spawned processes: this one's trainer never stepped
        step = int(read_run_checkpoint(checkpoint, "diffusion").contents.get("global_step", 0))
    metrics.update(global_step=step, checkpoint=checkpoint, output_dir=str(out))
    unlabelled = len(datamodule.unlabelled_set or [])
    metrics.update({"data/num_train": len(records) - unlabelled, "data/num_unlabelled": unlabelled,
                    "data/skipped": len(skipped)})  # fmt: skip
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    log.info("Diffusion training done at step %d; last checkpoint: %s", step, checkpoint)
    return metrics
