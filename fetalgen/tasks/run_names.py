"""The names a run gets in its loggers, as OmegaConf resolvers of the configs (``${run_name:...}``,
``${sweep_group:...}``, ``${run_id:...}``): registered on import, which every command does (``fetalgen.cli``), so a
composed config resolves even where no task runs (``--cfg job``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def _multirun() -> HydraConfig | None:
    """Hydra's config of the running job when it is part of a multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def sweep_group(default: str) -> str:
    """``<default>-<sweep dir name>`` inside a multirun (so W&B groups the runs of one sweep), else ``default``."""
    hydra_cfg = _multirun()
    return f"{default}-{Path(hydra_cfg.sweep.dir).name}" if hydra_cfg else default


def run_name(default: str) -> str:
    """The job's overrides (``data.num_real=5,seed=0``) inside a multirun, else ``default``; a value that is a path
    is named by its last part (no absolute paths in a dashboard)."""
    hydra_cfg = _multirun()
    if not hydra_cfg:
        return default
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    parts = []
    for item in sorted(hydra_cfg.overrides.task):
        key, sep, value = str(item).partition("=")
        if key.lstrip("+~") in excluded:
            continue
        parts.append(f"{key}{sep}{Path(value).name if '/' in value else value}")
    return ",".join(parts) or default


def run_id(output_dir: str | None) -> str | None:
    """A W&B run id from the run folder: the same folder (a requeued job) gives the same id (None where no run
    folder is set, as in ``--cfg job``: W&B then draws one)."""
    if not output_dir:
        return None
    return "fg-" + hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
OmegaConf.register_new_resolver("run_id", run_id, replace=True)
