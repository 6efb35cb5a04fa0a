"""A training progress bar for step budgets: one bar over every optimizer step, "step 340/1000, val/dice 0.81".

Lightning's bar counts batches of the current epoch ("Epoch 749: 2/2"), which says nothing when a run is bounded by
``trainer.max_steps`` over a few-pair dataset. Validation runs between steps without a bar of its own (a nested bar
writes cursor-up codes, stray ``[A`` lines where the output is not a terminal); its metrics show on the step bar.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from fetalgen.utils.bars import PIPE_UPDATES  # bar redraws per run when the output is a pipe or a file


def refresh_rate(max_steps: int, interactive: bool | None = None) -> int:
    """Steps between redraws: every step on a terminal; where the output is a pipe or a file (each redraw is
    another ~150 bytes there), about :data:`PIPE_UPDATES` per run whatever its length."""
    if interactive is None:
        interactive = sys.stderr.isatty()
    return 1 if interactive else max(1, max_steps // PIPE_UPDATES)


class StepProgressBar(TQDMProgressBar):
    """A :class:`TQDMProgressBar` whose training bar spans ``trainer.max_steps`` optimizer steps.

    Where the output is not a terminal (``lines``; default: stderr is not a tty), there is no bar to redraw: every
    ``refresh_rate`` steps one whole line (``step 340/1000 (34%), 16.4 steps/s, 0:00:40 left, train/loss 0.064``),
    so log lines printed meanwhile never land on a bar's line.
    """

    def __init__(self, refresh_rate: int = 1, lines: bool | None = None, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.lines = (not sys.stderr.isatty()) if lines is None else lines
        self._start: tuple[float, int] = (0.0, 0)

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True) if self.lines else super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(disable=True) if self.lines else super().init_train_tqdm()

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step  # a resumed run starts where it stopped
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("step")
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run, not one per epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self._draw(trainer, pl_module, step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step  # few-pair epochs end every step or two: draw once per update step
        if (
            self._should_update(step, self.train_progress_bar.total)
            and getattr(self, "drawn_step", None) != step
        ):
            self._draw(trainer, pl_module, step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self.lines:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # the new val/dice

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        self.drawn_step = step
        self.train_progress_bar.n = step
        metrics = self.get_metrics(trainer, pl_module)
        if not self.lines:
            self.train_progress_bar.set_postfix(metrics)  # refreshes the bar
            return
        total = int(self.train_progress_bar.total or trainer.max_steps)
        started, first = self._start
        rate = (step - first) / max(time.perf_counter() - started, 1e-9)
        left = f", {datetime.timedelta(seconds=round((total - step) / rate))} left" if rate > 0 else ""
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items() if k != "v_num")
        print(f"step {step}/{total} ({100 * step // max(total, 1)}%), {rate:.1f} steps/s{left}"
              + (f", {shown}" if shown else ""), flush=True)  # fmt: skip
