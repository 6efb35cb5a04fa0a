"""Thin Hydra entry points: each ``main`` composes a config from ``conf/`` and calls a typed task function."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fetalgen.tasks import run_names  # noqa: F401  (the run-name resolvers the configs use)
from fetalgen.utils.errors import USER_ERRORS, traceback_wanted


def config_dir() -> Path:
    """``conf/`` beside the package in a source checkout (or an editable install), else the copy a wheel ships
    inside the package (``fetalgen/conf``, see ``pyproject.toml``)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / "finetune.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"fetalgen's configs are neither in {package.parent / 'conf'} nor in {package / 'conf'}"
    )


CONFIG_DIR = str(config_dir())

# ${fetalgen_help:<config>} in conf/hydra/default.yaml: the command's --help page, made from its config.
OmegaConf.register_new_resolver(
    "fetalgen_help", lambda name: __import__("fetalgen.cli.help").cli.help.hydra_template(name), replace=True
)

# ${fetalgen_dir:} in configs: the installed package's folder (for the files it ships, e.g. the paper's lists).
OmegaConf.register_new_resolver(
    "fetalgen_dir", lambda: str(Path(__file__).resolve().parents[1]), replace=True
)


def resolved_paths(**overrides: str) -> dict[str, Path]:
    """The folders of ``conf/paths/default.yaml`` resolved as a task resolves them (environment variables such
    as ``FETALGEN_HC18_DIR`` included), for scripts and tests that need them outside a Hydra run; the run's own
    ``output_dir`` is left out. ``overrides`` replace entries, as ``paths.<key>=...`` would."""
    paths = OmegaConf.load(config_dir() / "paths" / "default.yaml")
    paths.merge_with(overrides)
    resolved = OmegaConf.create({"paths": paths}).paths
    return {key: Path(str(resolved[key])) for key in paths if key != "output_dir"}


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value of ``name`` in a metrics dict as a float, for Hydra sweepers; ``None`` if no name."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"Metric {name!r} was not produced; available: {sorted(metrics)}")
    return float(metrics[name])


def run(task: Callable[[Any], Any], cfg: Any) -> Any:
    """``task(cfg)`` for a command: a user's mistake of a single run ends it with exit code 1 after the task's one
    logged line (Hydra would print it again with a stripped traceback); with ``HYDRA_FULL_ERROR=1``, or in a
    multirun (Hydra records each job's failure), the exception goes on to Hydra."""
    try:
        return task(cfg)
    except USER_ERRORS:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if traceback_wanted() or not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        raise SystemExit(1) from None
