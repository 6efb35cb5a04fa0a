"""Scripts and tests find the folders where the tasks look: conf/paths resolved once, environment included."""

from pathlib import Path

import pytest

from fetalgen.cli import resolved_paths


def test_resolved_paths_follow_conf_paths_and_its_environment_variables(monkeypatch: pytest.MonkeyPatch):
    for name in ("FETALGEN_ROOT", "FETALGEN_DATA_DIR", "FETALGEN_HC18_DIR", "FETALGEN_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    default = resolved_paths()
    assert default["hc18_dir"] == Path("data/hc18") and default["checkpoint_dir"] == Path("checkpoints")
    assert "output_dir" not in default  # the Hydra run's own folder
    assert (default["paper_lists_dir"] / "ES_data.list").is_file()  # shipped with the package
    monkeypatch.setenv("FETALGEN_DATA_DIR", "/data/fetal")
    monkeypatch.setenv("FETALGEN_HC18_DIR", "/elsewhere/hc18")
    moved = resolved_paths()
    assert moved["hc18_dir"] == Path("/elsewhere/hc18") and moved["african_dir"] == Path(
        "/data/fetal/african"
    )
    assert resolved_paths(data_dir="/d")["spanish_dir"] == Path("/d/spanish")  # as paths.data_dir=/d would
