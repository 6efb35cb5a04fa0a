"""The Makefile as a user runs it: HC18 found as an absolute path, nothing exported when there is none."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def shown(checkout: Path, cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "FETALGEN_HC18_DIR"} | env
    done = subprocess.run(["make", "-s", "-C", str(checkout), "show-data"], cwd=cwd, env=clean,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip().removeprefix("FETALGEN_HC18_DIR=")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", repo)
    return repo


def test_nothing_is_exported_without_data(checkout: Path):
    assert shown(checkout, checkout) == ""  # the configs' default (data/hc18) stays in force


def test_the_shared_copy_is_exported_as_an_absolute_path(checkout: Path, tmp_path: Path):
    shared = checkout.parent / "shared" / "data" / "hc18"
    (shared / "training_set").mkdir(parents=True)
    assert shown(checkout, checkout) == str(shared)
    assert shown(checkout, tmp_path) == str(shared)  # make -C from another folder: the same absolute path


def test_a_local_download_wins_and_a_users_setting_wins_over_both(checkout: Path):
    (checkout.parent / "shared" / "data" / "hc18" / "training_set").mkdir(parents=True)
    (checkout / "data" / "hc18" / "training_set").mkdir(parents=True)
    assert shown(checkout, checkout) == str(checkout / "data" / "hc18")
    assert shown(checkout, checkout, FETALGEN_HC18_DIR="/mine/hc18") == "/mine/hc18"


def test_ci_runs_the_readme_command_and_exports_nothing():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert "make test-full" in commands and not any(line.startswith("export") for line in commands)
    assert "make test-full" in (ROOT / "README.md").read_text()  # the whole suite: what CI runs
