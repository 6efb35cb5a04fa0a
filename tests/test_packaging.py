"""The package as a user installs it: a wheel (non-editable) carries the configs and its entry points find them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_the_wheel_takes_the_package_and_the_configs_but_no_machines_own_settings():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["only-include"] == ["fetalgen", "conf"] and wheel["sources"] == {"conf": "fetalgen/conf"}
    assert "conf/local/*.yaml" in wheel["exclude"]


@pytest.mark.slow
def test_a_non_editable_install_runs_its_entry_points_with_the_shipped_configs(tmp_path: Path):
    # A fresh virtual environment gets the wheel (non-editable); its dependencies are borrowed from the running
    # environment through a .pth file (a real user's pip would download them). The checkout is not on its path.
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    for name in ("fetalgen", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "conf" / "local" / "default.yaml").write_text("# a machine's own settings\n")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "-v", "wheel", "--no-deps", "--no-build-isolation", str(source), "-w",
                            str(tmp_path / "wheel")], check=True, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    # A quiet install: the build backend has nothing to warn about (setuptools warned ~740 lines about the config
    # folders, then about the editable layout; hatchling maps conf/ into the wheel and installs editable quietly).
    warnings = [line for line in (build.stdout + build.stderr).splitlines()
                if "Warning" in line or "would be ignored" in line]  # fmt: skip
    assert warnings == [], warnings[:5]
    wheel = next((tmp_path / "wheel").glob("fetalgen-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True
    )
    site = next(venv.glob("lib/python*/site-packages"))
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "borrowed_dependencies.pth").write_text(
        "\n".join(borrowed) + "\n"
    )  # their .pth files stay unread
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True, capture_output=True
    )
    assert (site / "fetalgen" / "conf" / "finetune.yaml").is_file() and not (site / "conf").exists()
    assert not list((site / "fetalgen" / "conf" / "local").glob("*.yaml"))  # never a machine's own settings
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    where = run(str(python), "-c", "import fetalgen.cli as c; print(c.__file__, c.CONFIG_DIR)")
    assert where.stdout.split() == [
        str(site / "fetalgen" / "cli" / "__init__.py"),
        str(site / "fetalgen" / "conf"),
    ]
    job = run(str(venv / "bin" / "fetalgen-finetune"), "--cfg", "job", "--resolve")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "task_name: finetune" in job.stdout and "paper_lists_dir: " + str(site / "fetalgen") in job.stdout
    sample = run(str(venv / "bin" / "fetalgen-sample"), "--help")
    assert (
        sample.returncode == 0
        and "fidelity/features: sam_vit_b  (inception, lite_medsam, sam_tiny, sam_vit_b)" in sample.stdout
    )
