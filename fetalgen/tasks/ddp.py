"""DDP that works inside a Hydra multirun: each job trains once with N ranks.

Lightning's ``strategy=ddp`` starts the extra ranks of a node as new processes running the same command line
(``_SubprocessScriptLauncher``); under Hydra it appends ``hydra.run.dir`` to ``sys.argv[1:]``. In a multirun
(``-m``), ``sys.argv`` holds the whole sweep, so every extra rank would start the whole sweep again, in a
folder of the run mode. :class:`HydraJobDDPStrategy` gives the extra ranks the job's own overrides instead,
as a single run in the job's own folder, without Hydra's config copy, and with a log file of their own.

Which strategy for which launcher:

* ``trainer=ddp`` (this strategy, the subprocess launcher): GPUs, plain runs and ``-m`` sweeps alike; also on a
  CPU with ``trainer.accelerator=cpu`` (gloo). The training code runs in every rank, as on a cluster.
* ``trainer=ddp_cpu`` (``ddp_spawn``): a CPU rehearsal in one command; the ranks are forked from the job, so
  there is no command line to rebuild. Slower to start, and objects must pickle.
* SLURM (``hydra/launcher=slurm``): SLURM starts every rank itself (``srun``); Lightning's SLURM environment
  tells each its rank, and no process is launched by Lightning.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any
from unittest import mock

import torch
from lightning_fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher, subprocess_script

log = logging.getLogger(__name__)


def _job() -> tuple[list[str], str] | None:
    """The running Hydra multirun job's overrides and output folder, or None outside a multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return list(hydra_cfg.overrides.task), hydra_cfg.runtime.output_dir


def job_command(overrides: Sequence[str], output_dir: str, local_rank: int) -> tuple[list[str], str]:
    """The command and working folder of extra rank ``local_rank`` of a multirun job: the job's overrides as a
    single run in its output folder (Hydra's config copy off, a log file per rank)."""
    from hydra.utils import get_original_cwd

    import __main__

    if __main__.__spec__ is None:  # a script run by path
        command = [sys.executable, __main__.__file__]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += [*overrides, f"hydra.run.dir={output_dir}", "hydra.output_subdir=null",
                f"hydra.job.name=rank_{local_rank}",
                f"hydra.job_logging.handlers.file.filename={output_dir}/rank_{local_rank}.log"]  # fmt: skip
    return command, get_original_cwd()


class JobObserver(_ChildProcessObserver):
    """Lightning's watch over a job's extra ranks (a rank that dies takes the others down, as a hang in a collective
    would otherwise follow), until the job is over."""

    def __init__(self, main_pid: int, child_processes: list) -> None:
        super().__init__(main_pid=main_pid, child_processes=child_processes)
        self.stopped = False

    def _run(self) -> bool:
        return True if self.stopped else super()._run()


DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher whose extra ranks, inside a Hydra multirun job, run that job only; when
    the job is done, its ranks are waited for, the process group closed and the DDP environment variables it set
    removed, so that the next job of the sweep (in the same process) starts its own ranks on a new port."""

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if _job() is None or self.cluster_environment.creates_processes_externally:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        saved = {key: os.environ.get(key) for key in DDP_ENVIRONMENT}
        # Lightning's launch, with an observer this job can stop: Lightning's own keeps watching the ranks after the
        # job and would kill the whole sweep (SIGKILL of this process) if one of them exits non-zero later on.
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        self._call_children_scripts()
        observer = JobObserver(main_pid=os.getpid(), child_processes=self.procs)
        observer.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        try:
            return function(*args, **kwargs)
        finally:
            observer.stopped = True
            for rank, proc in enumerate(self.procs, start=1):
                if proc.wait() != 0:
                    log.warning("rank %d of this job exited with code %s", rank, proc.returncode)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _call_children_scripts(self) -> None:
        job = _job()
        if job is None:
            return super()._call_children_scripts()
        overrides, output_dir = job
        with mock.patch.object(  # the command builder this launcher calls (pytorch_lightning 2.x)
            subprocess_script,
            "_hydra_subprocess_cmd",
            lambda local_rank: job_command(overrides, output_dir, local_rank),
        ):
            return super()._call_children_scripts()


class HydraJobDDPStrategy(DDPStrategy):
    """``DDPStrategy`` (the subprocess launcher) with :class:`HydraJobLauncher` (the module doc)."""

    strategy_name = "ddp_hydra_job"

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
