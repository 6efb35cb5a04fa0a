"""Hydra task plumbing shared by every entry point (after lightning-hydra-template's ``src/utils``)."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import Logger, WandbLogger

from fetalgen.tasks import run_names  # noqa: F401  (registers the run-name resolvers the logger configs use)
from fetalgen.utils.checkpoints import RunRecord
from fetalgen.utils.errors import USER_ERRORS, traceback_wanted
from fetalgen.utils.progress import StepProgressBar, refresh_rate
from fetalgen.utils.quiet import quiet_known_warnings

log = logging.getLogger(__name__)


def log_final_metrics(loggers: list[Logger], metrics: dict[str, Any], step: int = 0) -> None:
    """The numbers of ``metrics`` to every logger, and into W&B's run summary (what its tables show)."""
    numbers = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for lg in loggers:
        lg.log_metrics(numbers, step=step)
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(numbers)
        lg.save()


def task_wrapper(task: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any]]:
    """Run ``task(cfg)`` so that a crash is logged with its output directory and W&B is closed; a user's mistake
    (:data:`~fetalgen.utils.errors.USER_ERRORS`) in one line, other failures with their traceback.

    One failed job then does not leave a dangling W&B run that breaks the next job of a multirun.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict[str, Any]:
        quiet_known_warnings()
        try:
            return task(cfg)
        except Exception as err:
            out = cfg.paths.get("output_dir", "?")
            if isinstance(err, USER_ERRORS) and not traceback_wanted():  # its message says what to fix
                log.error("%s\n(output dir: %s; HYDRA_FULL_ERROR=1 shows the traceback)", err, out)
            else:
                log.exception("Task failed; output dir: %s", out)
            raise
        finally:
            close_wandb()

    return wrapped


def build(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(config, **kwargs)``, a built class's own refusal of a bad setting
    (:data:`~fetalgen.utils.errors.USER_ERRORS`, whose message names it) raised as itself, not inside Hydra's
    ``InstantiationException``."""
    try:
        return hydra.utils.instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (always, outside DDP): the one that writes a run's files. The extra ranks of
    ``trainer=ddp`` run the task too, from its start (Lightning reads the rank from the environment)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def resume_checkpoint(cfg: DictConfig, task: str) -> str | None:
    """The checkpoint a training run resumes from: ``cfg.ckpt_path``, else, by ``cfg.auto_resume``, the run
    folder's own ``checkpoints/last.ckpt``: ``requeue`` (default) when SLURM restarted the job (a preempted or
    timed-out job that the launcher requeued runs again in the same folder), ``true`` whenever it is there, ``false``
    never. The file is checked (:func:`~fetalgen.utils.checkpoints.read_run_checkpoint`) before Lightning reads it.
    """
    import os

    from fetalgen.utils.checkpoints import read_run_checkpoint

    path = cfg.get("ckpt_path")
    own = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    mode = cfg.get("auto_resume", "requeue")
    requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if path is None and own.is_file() and (mode is True or (mode == "requeue" and requeued)):
        log.info(
            "resuming this run's own %s (auto_resume=%s%s)", own, mode, ", a requeued job" if requeued else ""
        )
        path = str(own)
    if path is not None:
        read_run_checkpoint(path, task)  # safe (weights_only) and the right kind, before Lightning
    return path


def close_wandb() -> None:
    """Finish the active W&B run, if W&B was used at all."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Build every ``_target_`` entry of a ``callbacks`` config group (null entries are skipped)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Build every ``_target_`` entry of a ``logger`` config group (empty for ``logger=none``)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def build_trainer(cfg: DictConfig, task: str, provenance: dict[str, Any]) -> tuple[pl.Trainer, list[Logger]]:
    """The Trainer of ``cfg.trainer`` with the callbacks and loggers of ``cfg``; the config is logged.

    Every checkpoint carries the run record (:class:`RunRecord`): ``task``, the resolved config and
    ``provenance``. Without a logger, LearningRateMonitor (which refuses to run then) is left out. Under a step budget
    the progress bar counts steps (:class:`~fetalgen.utils.progress.StepProgressBar`).
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [
        RunRecord(task, resolved, provenance),
        *instantiate_callbacks(cfg.get("callbacks")),
    ]
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if (cfg.trainer.get("max_steps") or -1) > 0 and cfg.trainer.get("enable_progress_bar", True):
        # "step 340/1000, val/dice 0.81" instead of "Epoch 749: 2/2"; in a pipe or file, ~50 redraws a run
        callbacks.append(StepProgressBar(refresh_rate=refresh_rate(int(cfg.trainer.max_steps))))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_trainer(trainer, callbacks, requested_precision=cfg.trainer.get("precision"))
    log_config(loggers, cfg)
    return trainer, loggers


def check_trainer(trainer: pl.Trainer, callbacks: list[Callback], requested_precision: Any = None) -> None:
    """Fail before the first step on settings that would fail (or silently change) later.

    Raises:
        ValueError: fp16 precision on a CPU (Lightning would run bf16 while the config says 16).
        PermissionError: a callback's output folder (checkpoints, sample grids) cannot be written.
    """
    precision = str(requested_precision if requested_precision is not None else trainer.precision)
    if isinstance(trainer.accelerator, CPUAccelerator) and precision.startswith("16"):
        raise ValueError(
            f"trainer.precision={precision} needs a GPU (float16 autocast with Lightning's gradient scaler runs on CUDA "
            "only); on a CPU use trainer.precision=bf16-mixed or 32"
        )
    for cb in callbacks:
        folder = getattr(cb, "dirpath", None)
        if folder is None:
            continue
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise PermissionError(f"{type(cb).__name__} cannot write to {folder}: {err}") from err


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the resolved config to every logger as hyperparameters."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(resolved)


def output_dir(cfg: DictConfig) -> Path:
    """The run's output directory (Hydra's per-job directory), created if needed."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out
