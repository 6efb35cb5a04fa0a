"""Thin Hydra entry points: each ``main`` composes a config from ``conf/`` and calls a typed task function."""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
