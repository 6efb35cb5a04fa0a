"""--help pages made from the configs: a command's purpose, examples, its groups and settings; fetalgen --help."""

import subprocess
import sys
from pathlib import Path

import pytest

from fetalgen.cli.help import COMMANDS, main

ROOT = Path(__file__).parents[2]


def help_page(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", f"fetalgen.cli.{module}", "--help"], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def test_a_commands_help_shows_its_purpose_examples_groups_and_settings():
    page = help_page("predict")
    assert page.startswith("fetalgen-predict: segment unlabelled images")
    assert "Examples:\n  fetalgen-predict ckpt_path=" in page
    assert (
        "model: sam/tiny  (sam/lite_medsam, sam/medsam, sam/small, sam/tiny, sam/vit_b, sam/vit_h, sam/vit_l)"
        in page
    )
    assert "allow_random_weights: false" in page and "auto_rounds: 2" in page  # settings with their defaults
    assert (
        "trainer:" not in page and "Hydra's own flags" in page
    )  # no unrelated groups (Hydra's page lists all)
    finetune = help_page("finetune")
    assert "trainer: cpu  (cpu, ddp, ddp_cpu, default, gpu, multinode)" in finetune
    assert "experiment: null  (cpu/diffusion, cpu/finetune," in finetune and "max_steps: 1000" in finetune


def test_fetalgen_lists_every_command(capsys):
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert main([]) == 0
    out = capsys.readouterr().out
    assert {name for name, _ in COMMANDS} == set(scripts) - {"fetalgen"}
    for name in scripts:
        if name != "fetalgen":
            assert f"  {name} " in out
