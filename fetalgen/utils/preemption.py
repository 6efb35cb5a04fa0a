"""Preemption: on the launcher's signal, save ``last.ckpt`` atomically at the end of the current step, then hand
the signal on (to Lightning's SLURM requeue, submitit's, or the default: the process ends), so the requeued job
resumes from the step it was stopped at rather than from the last periodic checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)

# SLURM's --signal (USR1 by Lightning's convention), submitit's preemption/timeout signal (USR2), and TERM (scancel,
# a cluster's grace period before the kill).
PREEMPTION_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")


class CheckpointOnSignal(Callback):
    """Save ``path`` (atomically: a temporary file, then a rename) after the step during which one of ``signals``
    arrived, then pass the signal to the handler that was installed before (or its default action).

    Saving happens between steps, not inside the signal handler, so a checkpoint is never taken mid-update; with
    several processes (DDP) they agree at each step whether any of them was signalled, so all save together.
    """

    def __init__(self, path: str | Path, signals: Sequence[str] = PREEMPTION_SIGNALS) -> None:
        self.path = Path(path)
        self.signals = [getattr(signal, name) for name in signals]
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.pending = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in self.signals:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        if not self.pending:
            log.info("on %s: %s saved after the current step (preemption)",
                     "/".join(signal.Signals(s).name for s in self.signals), self.path.name)  # fmt: skip

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        signalled = self.pending is not None
        if trainer.world_size > 1:
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if not signalled:
            return
        signum = self.pending or signal.SIGUSR1  # a DDP peer was signalled, this process was not
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.preempted")
        trainer.save_checkpoint(temporary)
        if trainer.is_global_zero:
            os.replace(temporary, self.path)
        log.warning("%s at step %d: state saved to %s; handing the signal on",
                    signal.Signals(signum).name, trainer.global_step, self.path)  # fmt: skip
        self.pending = None
        previous = self.previous.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)  # the default action: the process ends, the launcher requeues
        else:  # ignored before: keep training
            self.on_fit_start(trainer, trainer.lightning_module)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}
