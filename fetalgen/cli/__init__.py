"""Thin Hydra entry points: each ``main`` composes a config from ``conf/`` and calls a typed task function."""

from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# ${fetalgen_dir:} in configs: the installed package's folder (for the files it ships, e.g. the paper's lists).
OmegaConf.register_new_resolver(
    "fetalgen_dir", lambda: str(Path(__file__).resolve().parents[1]), replace=True
)
