"""The ``fetalgen-finetune`` task: train SAM on real (+ synthetic) pairs, then evaluate the best checkpoint."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger

from fetalgen.data.provenance import (
    TRAINING_CASES,
    case_records,
    check_no_leak,
    label_counts,
    labelled_names,
    write_training_cases,
)
from fetalgen.data.sources import EvalSet, load_present
from fetalgen.data.synthetic import set_roots
from fetalgen.evaluation.engine import EvalSettings, evaluate_sets
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor, require_weights
from fetalgen.tasks.build import eval_sources
from fetalgen.tasks.common import (
    build,
    build_trainer,
    is_rank_zero,
    output_dir,
    resume_checkpoint,
    task_wrapper,
)
from fetalgen.utils.checkpoints import CheckpointError, read_run_checkpoint
from fetalgen.utils.device import resolve_device
from fetalgen.utils.files import write_json

log = logging.getLogger(__name__)


@task_wrapper
def finetune(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``, evaluate the best checkpoint on the test sets, write ``metrics.json``.

    Leak-free by construction: before any training, the validation split and every test set are checked
    against SAM's and the generator's training cases and subjects (:class:`~fetalgen.data.provenance.LeakageError`).

    Returns:
        Flat metrics: ``val/dice`` (best), the last ``train/*``/``val/*`` values, ``train/steps``, ``data/*``
        counts (pairs used, excluded and seen), ``labels/*`` (labelled real pairs behind the model), and per
        test set ``test/<set>/<metric>``, ``test/<set>/<metric>_std`` and ``test/<set>/baseline_<metric>``.
    """
    check_validation_schedule(cfg.trainer)
    evaluation: EvalSettings = build(cfg.eval)  # an unknown prompt mode fails now
    out = output_dir(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    model: SamFinetuneModule = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    own = datamodule.test_split() if cfg.get("test_split", True) else []
    test_sets = own + load_present(eval_sources(cfg.get("test_sets")), cfg.data.image_size)
    if cfg.get("train", True):
        trainer, loggers, metrics = fit(cfg, model, datamodule, test_sets, out)
        if not trainer.is_global_zero:
            return metrics
        weights = load_best(trainer, model, metrics)
        device, step = trainer.strategy.root_device, trainer.global_step
    else:  # arm=zero_shot: the model as built, with no label behind it, on the boxes every arm of the seed gets
        # a random model's zero-shot means nothing: pretrained weights required
        require_weights(None, cfg.model.sam.get("checkpoint"), False)
        loggers, metrics, device, step = [], dict(AS_BUILT), resolve_device("auto"), 0
        weights = f"{cfg.model.sam.model_type} as built, zero-shot"
    tested = test_model(model, device, test_sets, evaluation, out, weights)
    log_evaluation(loggers, out / "eval", tested, step)
    metrics |= tested
    best = (
        {"val/dice": metrics["val/dice"], "val/dice_best": metrics["val/dice"]}
        if "val/dice" in metrics
        else {}
    )
    for lg in loggers:  # W&B's summary: the best checkpoint's val/dice, not the last validation's
        if isinstance(lg, WandbLogger) and best:
            lg.experiment.summary.update(best)
    write_json(out / "metrics.json", metrics)
    return metrics


AS_BUILT = {"train/steps": 0.0, "labels/sam": 0.0, "labels/generator": 0.0, "labels/total": 0.0,
            "unlabelled/total": 0.0}  # fmt: skip
"""The counts of a model evaluated as built (``train=false``): no step, no label, no unlabelled image."""


def fit(
    cfg: DictConfig, model: SamFinetuneModule, datamodule: Any, test_sets: list[EvalSet], out: Path
) -> tuple[pl.Trainer, list[Logger], dict[str, float]]:
    """Check and record the data (:func:`check_and_record`), then train; returns the trainer, its loggers and the
    run's flat metrics (last ``train/*``/``val/*`` values, ``train/steps``, ``data/*``, ``labels/*``)."""
    resume = resume_checkpoint(cfg, "finetune")
    inherited = inherited_lineage(resume, cfg.get("allow_unknown_lineage", False))
    provenance = check_and_record(cfg.trainer, out, datamodule, test_sets, inherited)
    counts = data_counts(datamodule)
    log.info("training pairs: %s", counts)
    trainer, loggers = build_trainer(cfg, "finetune", provenance)
    for lg in loggers:
        lg.log_hyperparams(counts)
    for root in set_roots(cfg.data.get("synthetic_dir")):
        log_synthetic_set(loggers, root)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    metrics: dict[str, float] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics |= {k: float(v) for k, v in data_counts(datamodule).items()}  # as loaded: skipped pairs left out
    metrics |= seen_counts(model.seen_names, datamodule)
    metrics["train/steps"] = float(trainer.global_step)
    return trainer, loggers, metrics


def check_and_record(
    trainer_cfg: DictConfig, out: Path, datamodule: Any, test_sets: list[EvalSet],
    inherited: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:  # fmt: skip
    """Before any training: every image SAM would train on (real, synthetic), its generator's and what the resumed
    weights saw, against the held-out cases by name, subject and pixels (a held-out image put into a synthetic set,
    or copied under a new name, is found too); then the data loaded and the training cases written. Returns the
    provenance the checkpoints carry."""
    trained_on = case_records(datamodule.train_cases + datamodule.synthetic_cases)
    check_no_leak(
        trained_on
        + inherited["training_cases"]
        + inherited["generator_cases"]
        + (datamodule.generator_cases or []),
        {"validation": datamodule.val_cases} | {f"test set {t.name!r}": t.cases for t in test_sets},
        model="SAM (or the generator of its synthetic pairs)",
        fix="evaluate on cases outside the training pool, or drop the test set from test_sets",
    )
    datamodule.setup("fit")  # load now: skips and the epoch length are known before the first step
    if not len(datamodule.train_set):
        raise ValueError(
            "no training pair left (every one skipped as bad, or none chosen): nothing to train on"
        )
    check_validation_schedule(
        trainer_cfg, math.ceil(len(datamodule.train_set) / datamodule.batch_size), len(datamodule.val_set)
    )
    used = {c.name for c in datamodule.train_set.cases}  # skipped pairs are not trained on, nor listed
    sam_cases = [r for r in trained_on if r["name"] in used and r["cohort"] != "synthetic"]
    sam_cases = merged(sam_cases, inherited["training_cases"])
    if is_rank_zero():  # the run's files, once (the extra ranks of trainer=ddp run this function too)
        write_training_cases(out / TRAINING_CASES, sam_cases)
        write_skipped(out, datamodule.skipped())
    return {"training_cases": sam_cases,
            "generator_cases": merged(datamodule.generator_cases, inherited["generator_cases"])}  # fmt: skip


def load_best(trainer: pl.Trainer, model: SamFinetuneModule, metrics: dict[str, float]) -> str:
    """Load the best checkpoint's weights (by ``val/dice``) into ``model`` and put its score in ``metrics``
    (``val/dice``, read from the file: spawned DDP processes hand back the best path but not its score); returns
    what was loaded (the path, or ``last weights`` without a checkpoint)."""
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None else ""
    if not best:
        return "last weights"
    checkpoint = read_run_checkpoint(best, "finetune").contents
    model.load_state_dict(checkpoint["state_dict"])
    if ckpt.monitor == "val/dice":
        metrics["val/dice"] = best_score(checkpoint, ckpt.monitor)
    log.info("best checkpoint %s (val/dice %.4f)", best, metrics.get("val/dice", math.nan))
    return best


def test_model(model: SamFinetuneModule, device: Any, test_sets: list[EvalSet], evaluation: EvalSettings,
               out: Path, checkpoint: str) -> dict[str, float]:  # fmt: skip
    """The model on every test set (``<out>/eval/<set>/``), beside the box-ellipse baseline: ``test/<set>/...``."""
    return evaluate_sets(SamBoxPredictor(model, device), test_sets, out / "eval", "test",
                         evaluation.for_model(model.hparams), info={"checkpoint": checkpoint})  # fmt: skip


def inherited_lineage(resume: str | None, allow_unknown: bool = False) -> dict[str, list[dict[str, Any]]]:
    """What the weights a run resumes from already trained on (their checkpoint's provenance), so that the leakage
    guard and the new checkpoint's record carry it.

    Raises:
        CheckpointError: the checkpoint records no training cases (its lineage is unknown), unless ``allow_unknown``.
    """
    empty: dict[str, list[dict[str, Any]]] = {"training_cases": [], "generator_cases": []}
    if resume is None:
        return empty
    provenance = read_run_checkpoint(resume, "finetune").provenance
    if not isinstance(provenance, dict) or not isinstance(provenance.get("training_cases"), list):
        if allow_unknown:
            log.warning(
                "resuming %s, which records no training cases: test leakage cannot be ruled out", resume
            )
            return empty
        raise CheckpointError(
            f"{resume}: records no training cases, so what its weights saw is unknown: refused as a resume "
            "(allow_unknown_lineage=true resumes anyway, and the leakage guard cannot cover those weights)"
        )
    generator = provenance.get("generator_cases")
    return {"training_cases": list(provenance["training_cases"]),
            "generator_cases": list(generator) if isinstance(generator, list) else []}  # fmt: skip


def merged(*lists: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The records of ``lists`` (None: unrecorded) in order, each once; None when every list is None."""
    if all(x is None for x in lists):
        return None
    out, seen = [], set()
    for record in (r for x in lists if x for r in x):
        key = repr(sorted(record.items()))
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def check_validation_schedule(
    trainer_cfg: DictConfig, batches_per_epoch: int | None = None, num_val: int | None = None
) -> None:
    """Refuse, before training, settings under which no validation would run (so no ``val/dice`` and no best
    checkpoint): a step budget shorter than the validation interval; an epoch budget (``trainer.max_epochs``, a
    Lightning habit) whose batches end before it; validation switched off (``limit_val_batches=0``); and, once
    the data are loaded, an empty validation split (e.g. every validation pair skipped as bad)."""
    steps, every = trainer_cfg.get("max_steps", -1), trainer_cfg.get("val_check_interval")
    by_steps = isinstance(every, int) and trainer_cfg.get("check_val_every_n_epoch") is None
    if by_steps and 0 < steps < every:
        raise ValueError(
            f"trainer.val_check_interval={every} > trainer.max_steps={steps}: no validation would run and no best "
            "checkpoint be kept; set trainer.val_check_interval to at most max_steps"
        )
    if trainer_cfg.get("limit_val_batches", 1.0) in (0, 0.0):
        raise ValueError(
            "trainer.limit_val_batches=0: no validation would run and no best checkpoint be kept"
        )
    epochs = trainer_cfg.get("max_epochs") or -1
    if by_steps and batches_per_epoch is not None and epochs > 0 and epochs * batches_per_epoch < every:
        raise ValueError(
            f"trainer.max_epochs={epochs} x {batches_per_epoch} batches per epoch = {epochs * batches_per_epoch} "
            f"batches, fewer than trainer.val_check_interval={every}: no validation would run. Training is "
            "step-based here: set trainer.max_steps (and keep trainer.max_epochs=-1), or lower val_check_interval"
        )
    if num_val == 0:
        raise ValueError(
            "the validation split is empty (no validation pair, or every one skipped as bad): no validation would "
            "run; give validation pairs (data.num_val, data.split_file) or fix the skipped files"
        )


def best_score(checkpoint: dict[str, Any], monitor: str = "val/dice") -> float:
    """The ``best_model_score`` of ``monitor`` that a ModelCheckpoint callback stored in a Lightning checkpoint."""
    for state in checkpoint.get("callbacks", {}).values():
        if state.get("monitor") == monitor and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    raise KeyError(f"the checkpoint holds no ModelCheckpoint best_model_score of {monitor}")


def log_synthetic_set(loggers: list[Logger], root: Path) -> None:
    """The synthetic set's fidelity figures (``synthetic/*``) to every logger, and its nearest-neighbour gallery
    to W&B (sets without ``summary.json`` or without fidelity figures are left out)."""
    from fetalgen.metrics.fidelity import summary_row

    path = root / "summary.json"
    fidelity = json.loads(path.read_text()).get("fidelity") if path.is_file() else None
    if not fidelity:
        return
    figures = {f"synthetic/{k}": v for k, v in summary_row(fidelity).items() if v is not None}
    for lg in loggers:
        lg.log_hyperparams(figures | {"synthetic/features": fidelity["features"]})
        gallery = Path(fidelity["nearest_neighbours"]["gallery"])
        if isinstance(lg, WandbLogger) and gallery.is_file():
            lg.log_image(key="synthetic/nearest_neighbours", images=[str(gallery)])


def log_evaluation(loggers: list[Logger], eval_dir: Path, metrics: dict[str, float], step: int) -> None:
    """Send the test metrics to every logger; to W&B also each set's per-image table and case figure."""
    if not metrics:
        return
    for lg in loggers:
        lg.log_metrics(metrics, step=step)
        if not isinstance(lg, WandbLogger):
            continue
        for folder in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
            table = folder / "per_image.csv"
            if table.is_file():
                lg.log_table(key=f"test/{folder.name}/per_image", dataframe=pd.read_csv(table))
            figure = folder / "cases.png"
            if figure.is_file():
                lg.log_image(key=f"test/{folder.name}/cases", images=[str(figure)])
        lg.experiment.summary.update(metrics)


def data_counts(datamodule: Any) -> dict[str, int]:
    """Training data of a ``PairDataModule``: real and synthetic pairs (with what was excluded and why), the
    labelled real pairs behind them (those SAM sees, those its set's generator or pseudo-labeller saw, and both
    together), and the unlabelled images behind them."""
    syn = getattr(datamodule, "synthetic_counts", {}) or {}
    train, val, test = (
        datamodule.train_cases + datamodule.synthetic_cases,
        datamodule.val_cases,
        datamodule.test_cases,
    )
    if datamodule.train_set is not None:  # loaded: the pairs actually used
        train, val, test = datamodule.train_set.cases, datamodule.val_set.cases, datamodule.test_set.cases
    real = [c for c in train if c.cohort != "synthetic"]
    sam = {c.name for c in real}
    behind = getattr(datamodule, "generator_cases", None) or []  # the generator's, or the pseudo-labeller's
    generator = labelled_names(behind)
    return {
        "data/num_real": len(real),
        "data/num_val": len(val),
        "data/num_test": len(test),
        "data/num_synthetic": len(train) - len(real),
        "data/skipped": len(datamodule.skipped()),
        "data/synthetic_qc_failed": int(syn.get("qc_failed", 0)),
        "data/synthetic_memorised_excluded": int(syn.get("memorised_excluded", 0)),
        "data/synthetic_memorised_kept": int(syn.get("memorised", 0)) - int(syn.get("memorised_excluded", 0)),
        "data/synthetic_below_agreement": int(syn.get("below_agreement", 0)),
        "data/synthetic_available": int(syn.get("kept", 0)),
        "labels/sam": len(sam),
        "labels/generator": len(generator),
        "labels/total": len(sam | generator),
        "unlabelled/total": label_counts(behind)["unlabelled"],  # images seen without their masks
    }


def write_skipped(folder: Path, skipped: list[str]) -> None:
    """``<folder>/skipped.txt``: one skipped file and its problem a line (only when something was skipped)."""
    if skipped:
        (folder / "skipped.txt").write_text("".join(f"{line}\n" for line in skipped))
        log.warning("%d bad file(s) skipped, listed in %s", len(skipped), folder / "skipped.txt")


def seen_counts(seen: set[str], datamodule: Any) -> dict[str, float]:
    """Distinct real and synthetic training pairs that reached a training step (nan when unknown: spawned
    DDP processes do not hand the set back)."""
    if not seen:
        return {"data/real_seen": math.nan, "data/synthetic_seen": math.nan}
    synthetic = {c.name for c in datamodule.synthetic_cases}
    return {
        "data/real_seen": float(len(seen - synthetic)),
        "data/synthetic_seen": float(len(seen & synthetic)),
    }
