"""--help pages made from the configs: a command's purpose, examples, its groups and settings; fetalgen --help."""

import os
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
    assert "trainer: cpu  (cpu, ddp, ddp_cpu, ddp_sbatch, default, gpu, multinode)" in finetune
    assert (
        "experiment: null  (cpu/diffusion, cpu/diffusion128, cpu/finetune," in finetune
        and "max_steps: 1000" in finetune
    )


def test_fetalgen_lists_every_command(capsys):
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert main([]) == 0
    out = capsys.readouterr().out
    assert {name for name, _ in COMMANDS} == set(scripts) - {"fetalgen"}
    for name in scripts:
        if name != "fetalgen":
            assert f"  {name} " in out


@pytest.mark.parametrize("module", ["finetune", "sample", "train_diffusion", "evaluate", "predict", "export"])
def test_help_imports_neither_torch_nor_lightning(module):
    # --help in about a second: the task (torch, Lightning) is imported only when the command runs.
    probe = (f"import sys; sys.argv = ['x', '--help']; import fetalgen.cli.{module} as m\n"
             "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(n for n in ('torch', 'pytorch_lightning') if n in sys.modules))")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_users_mistake_is_one_line_and_the_traceback_is_opt_in(tmp_path: Path):
    command = [sys.executable, "-m", "fetalgen.cli.predict", f"images.root={tmp_path / 'nowhere'}",
               "allow_random_weights=true", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in said
    assert said.count("nowhere") == 1 and "HYDRA_FULL_ERROR=1 shows the traceback" in said
    full = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert full.returncode == 1 and "Traceback" in full.stdout + full.stderr
