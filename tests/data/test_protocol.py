"""The protocol split (fetalgen-split): held-out subjects first, a fixed pool, the folder every step reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetalgen.data.cases import Case, DataError
from fetalgen.data.protocol import make_split, restrict_pool
from fetalgen.data.splits import holdout_split, read_split_file


def _cases() -> list[Case]:
    """20 cases of 10 subjects (two frames each)."""
    return [
        Case(f"{s:03d}_{f}HC", Path(f"{s}_{f}.png"), Path(f"{s}_{f}m.png"), f"{s:03d}", cohort="hc18")
        for s in range(10)
        for f in (1, 2)
    ]


def _subjects(cases: list[Case]) -> set[str]:
    return {c.subject for c in cases}


def test_holdout_split_keeps_subjects_apart_and_is_seeded() -> None:
    parts = holdout_split(_cases(), num_val=4, num_test=6, seed=0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [10, 4, 6]
    assert not _subjects(parts["train"]) & _subjects(parts["test"])
    assert not _subjects(parts["train"]) & _subjects(parts["val"])
    assert holdout_split(_cases(), 4, 6, seed=0) == parts
    assert holdout_split(_cases(), 4, 6, seed=1)["test"] != parts["test"]


def test_a_fixed_pool_takes_the_held_out_subjects_from_outside_it() -> None:
    pool = ["000_1HC", "001_1HC", "001_2HC"]  # subject 000 has a second frame outside the list
    parts = holdout_split(_cases(), num_val=2, num_test=4, seed=0, pool=pool)
    assert [c.name for c in parts["train"]] == pool
    held = parts["val"] + parts["test"]
    assert len(held) == 6 and not {"000", "001"} & _subjects(held)


def test_make_split_writes_the_folder_and_records_missing_pool_cases(tmp_path: Path) -> None:
    listed = tmp_path / "pool.list"
    listed.write_text("000_1HC\n001_1HC\n999_HC\n")
    with pytest.raises(DataError, match="1 listed case.*999_HC.*pool_missing=skip"):
        make_split(_cases(), tmp_path / "a", 2, 2, seed=0, pool_list=listed)
    info = make_split(_cases(), tmp_path / "b", 2, 2, seed=0, pool_list=listed, pool_missing="skip")
    assert info["pool_missing"] == ["999_HC"] and info["n_pool"] == 2
    lists = read_split_file(tmp_path / "b")
    assert lists["train"] == ["000_1HC", "001_1HC"] and len(lists["val"]) == len(lists["test"]) == 2
    written = json.loads((tmp_path / "b" / "split.json").read_text())
    assert written["counts"]["train"] == {"images": 2, "subjects": 2} and written["pool_missing"] == [
        "999_HC"
    ]


def test_restrict_pool_keeps_val_and_test(tmp_path: Path) -> None:
    make_split(_cases(), tmp_path / "split", 2, 2, seed=0)
    pool = read_split_file(tmp_path / "split")["train"]
    sub = restrict_pool(tmp_path / "split", pool[:3], tmp_path / "ref")
    full, ref = read_split_file(tmp_path / "split"), read_split_file(sub)
    assert ref["train"] == pool[:3] and ref["val"] == full["val"] and ref["test"] == full["test"]
    with pytest.raises(DataError, match="not in the pool"):
        restrict_pool(tmp_path / "split", [full["test"][0]], tmp_path / "bad")


def test_an_existing_split_is_not_overwritten_and_an_empty_pool_is_refused(tmp_path: Path) -> None:
    make_split(_cases(), tmp_path / "split", 2, 2, seed=0)
    before = read_split_file(tmp_path / "split")
    make_split(_cases(), tmp_path / "split", 2, 2, seed=0)  # the same split again: fine
    with pytest.raises(FileExistsError, match="holds another split"):
        make_split(_cases(), tmp_path / "split", 2, 2, seed=1)
    assert read_split_file(tmp_path / "split") == before
    make_split(_cases(), tmp_path / "split", 2, 2, seed=1, overwrite=True)
    assert read_split_file(tmp_path / "split") != before
    with pytest.raises(ValueError, match="no cases to split"):
        make_split([], tmp_path / "empty", 0, 0, seed=0)
    with pytest.raises(ValueError, match="the training pool is empty"):
        make_split(_cases()[:4], tmp_path / "all_held", 2, 2, seed=0)
