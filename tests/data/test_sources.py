"""Evaluation and reference sets: an eval_data config builds its source, whose reader runs when it is loaded."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR
from fetalgen.data.folder import read_folder
from fetalgen.data.sources import load_present
from fetalgen.tasks.build import eval_source


def eval_data(option: str, *overrides: str) -> DictConfig:
    """The ``eval_data`` config ``option`` of conf/eval_data/, as fetalgen-evaluate composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"eval_data={option}", *overrides]).eval_data


def test_each_config_of_the_group_goes_to_its_reader(
    phantom_dir: Path, phantom_synthetic: Path, tmp_path: Path
):
    listed = tmp_path / "names.txt"
    listed.write_text("phantom_0003\nphantom_0001\n")
    source = eval_source(
        eval_data("folder", f"eval_data.source.root={phantom_dir}", f"eval_data.source.list_file={listed}",
                  "eval_data.name=ph")
    )  # fmt: skip
    assert source.root == str(phantom_dir) and source.list_file == str(listed)
    folder = source.load(32)
    assert folder.name == "ph" and folder.where == str(phantom_dir) and folder.skipped == []
    assert [c.name for c in folder.cases] == ["phantom_0003", "phantom_0001"]
    assert {c.cohort for c in folder.cases} == {"ph"} and folder.dataset[0]["image"].shape == (1, 32, 32)
    synthetic = eval_source(eval_data("synthetic", f"eval_data.source.root={phantom_synthetic}")).load(16)
    assert len(synthetic.cases) == 6 and {c.cohort for c in synthetic.cases} == {
        "synthetic"
    }  # QC-failed left out
    phantom = eval_source(
        eval_data("phantom", f"eval_data.source.root={tmp_path / 'ph'}", "eval_data.source.n=3",
                  "eval_data.image_size=24")
    ).load(64)  # fmt: skip
    assert len(phantom.cases) == 3 and phantom.dataset.image_size == 24  # its own size wins over the model's
    with pytest.raises(ValueError, match="a conf/eval_data/ config"):
        eval_source({"name": "old", "kind": "folder", "root": str(phantom_dir)})


def test_a_test_set_whose_root_is_absent_is_skipped_and_the_others_load(phantom_dir: Path, tmp_path: Path):
    sources = {
        "here": eval_source(eval_data("folder", f"eval_data.source.root={phantom_dir}")),
        "absent": eval_source(eval_data("folder", f"eval_data.source.root={tmp_path / 'nowhere'}")),
        "dropped": None,
    }
    (loaded,) = load_present(sources, 32)
    assert loaded.name == "here" and len(loaded.cases) == len(read_folder(phantom_dir))
