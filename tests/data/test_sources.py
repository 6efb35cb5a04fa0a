"""Evaluation and reference sets named by a spec: each kind through its reader, an unknown kind refused."""

from pathlib import Path

import pytest

from fetalgen.data.sources import read_cases


def test_each_kind_goes_to_its_reader(phantom_dir: Path, phantom_synthetic: Path, tmp_path: Path):
    listed = tmp_path / "names.txt"
    listed.write_text("phantom_0003\nphantom_0001\n")
    folder = read_cases({"kind": "folder", "root": phantom_dir, "list_file": listed, "name": "ph"})
    assert [c.name for c in folder] == ["phantom_0003", "phantom_0001"] and {c.cohort for c in folder} == {
        "ph"
    }
    synthetic = read_cases({"kind": "synthetic", "root": phantom_synthetic})
    assert len(synthetic) == 6 and {c.cohort for c in synthetic} == {"synthetic"}  # QC-failed pairs left out
    assert len(read_cases({"kind": "phantom", "root": tmp_path / "ph", "n": 3})) == 3
    with pytest.raises(ValueError, match="unknown eval data kind 'dicom'"):
        read_cases({"kind": "dicom", "root": tmp_path})
