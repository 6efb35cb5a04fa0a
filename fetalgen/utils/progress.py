"""A training progress bar for step budgets: one bar over every optimizer step, "step 340/1000, val/dice 0.81".

Lightning's bar counts batches of the current epoch ("Epoch 749: 2/2"), which says nothing when a run is bounded by
``trainer.max_steps`` over a few-pair dataset. Validation runs between steps without a bar of its own (a nested bar
writes cursor-up codes, stray ``[A`` lines where the output is not a terminal); its metrics show on the step bar.
"""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

PIPE_UPDATES = 50  # bar redraws per run when the output is a pipe or a file (a SLURM .out, a CI log)


def refresh_rate(max_steps: int, interactive: bool | None = None) -> int:
    """Steps between redraws: every step on a terminal; where the output is a pipe or a file (each redraw is
    another ~150 bytes there), about :data:`PIPE_UPDATES` per run whatever its length."""
    if interactive is None:
        interactive = sys.stderr.isatty()
    return 1 if interactive else max(1, max_steps // PIPE_UPDATES)


class StepProgressBar(TQDMProgressBar):
    """A :class:`TQDMProgressBar` whose training bar spans ``trainer.max_steps`` optimizer steps."""

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step  # a resumed run starts where it stopped
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("step")

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run, not one per epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar
            self.drawn_step = step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step  # few-pair epochs end every step or two: draw once per update step
        if (
            self._should_update(step, self.train_progress_bar.total)
            and getattr(self, "drawn_step", None) != step
        ):
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.drawn_step = step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # the new val/dice
