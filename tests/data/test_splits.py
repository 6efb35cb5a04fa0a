"""Subject-wise splits, case lists, split files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetalgen.data.cases import Case, DataError
from fetalgen.data.splits import read_case_list, read_split_file, select_cases, split_by_subject


def _cases(frames_per_subject: list[int]) -> list[Case]:
    out = []
    for s, k in enumerate(frames_per_subject):
        for f in range(1, k + 1):
            name = f"{s:03d}_HC" if f == 1 else f"{s:03d}_{f}HC"
            out.append(Case(name, Path(f"{name}.png"), Path(f"{name}_Annotation.png"), f"{s:03d}", f))
    return out


CASES = _cases([1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1])  # 20 images, 15 subjects


def test_sizes_are_exact_and_subjects_disjoint() -> None:
    parts = split_by_subject(CASES, {"train": 8, "val": 5, "test": 4}, seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 8, "val": 5, "test": 4}
    subjects = [{c.subject for c in p} for p in parts.values()]
    assert (
        not (subjects[0] & subjects[1])
        and not (subjects[0] & subjects[2])
        and not (subjects[1] & subjects[2])
    )
    # every image of a chosen subject comes along
    for part in parts.values():
        for s in {c.subject for c in part}:
            assert sum(c.subject == s for c in part) == sum(c.subject == s for c in CASES)


def test_deterministic_by_seed() -> None:
    sizes = {"train": 6, "val": 4}
    a = split_by_subject(CASES, sizes, seed=3)
    b = split_by_subject(list(reversed(CASES)), sizes, seed=3)  # input order does not matter
    assert a == b
    others = [split_by_subject(CASES, sizes, seed=s)["train"] for s in range(4, 9)]
    assert any(o != a["train"] for o in others)


def test_not_enough_images_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="need 25 images but only 20 are available"):
        split_by_subject(CASES, {"train": 20, "val": 5}, seed=0)
    with pytest.raises(ValueError, match="cannot fill split 'train' with exactly 2 images"):
        split_by_subject(_cases([3, 3]), {"train": 2}, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        split_by_subject(CASES, {"train": -1}, seed=0)


def test_read_case_list_and_select(tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("# few cases\n001_2HC.png\n\n003_HC  # with a comment\n")
    assert read_case_list(f) == ["001_2HC", "003_HC"]
    assert [c.name for c in select_cases(CASES, read_case_list(f))] == ["001_2HC", "003_HC"]
    with pytest.raises(
        DataError, match=r"list.txt: 2 listed case\(s\) not found in the data: 777_HC, 888_HC"
    ):
        select_cases(CASES, ["777_HC", "003_HC", "888_HC"], source=f)
    f.write_text("003_HC\n003_HC.png\n")
    with pytest.raises(DataError, match="twice: 003_HC"):
        read_case_list(f)
    with pytest.raises(DataError, match="missing"):
        read_case_list(tmp_path / "nope.txt")


def test_split_files_yaml_json_and_directory(tmp_path: Path) -> None:
    yml = tmp_path / "split.yaml"
    yml.write_text("train: [000_HC, 001_HC.png]\nval: [002_HC]\n")
    assert read_split_file(yml) == {"train": ["000_HC", "001_HC"], "val": ["002_HC"], "test": []}
    js = tmp_path / "split.json"
    js.write_text(json.dumps({"train": ["000_HC"], "val": ["002_HC"], "test": ["003_HC"]}))
    assert read_split_file(js)["test"] == ["003_HC"]
    d = tmp_path / "lists"
    d.mkdir()
    (d / "train.txt").write_text("000_HC\n")
    (d / "val.txt").write_text("002_HC\n")
    assert read_split_file(d) == {"train": ["000_HC"], "val": ["002_HC"], "test": []}
    js.write_text(json.dumps({"train": ["000_HC"], "val": ["000_HC"]}))
    with pytest.raises(DataError, match="in both 'train' and 'val'"):
        read_split_file(js)
    js.write_text(json.dumps({"training": ["000_HC"]}))
    with pytest.raises(DataError, match="must map train/val"):
        read_split_file(js)
