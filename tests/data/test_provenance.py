"""Provenance records and the leakage check: hand-made cases."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fetalgen.data.cases import Case, DataError
from fetalgen.data.provenance import (
    LeakageError,
    case_records,
    check_no_leak,
    find_overlap,
    read_synthetic_provenance,
    read_training_cases,
    write_synthetic_provenance,
    write_training_cases,
)


def case(name: str, subject: str, cohort: str = "hc18") -> Case:
    return Case(name, Path(f"/d/{name}.png"), Path(f"/d/{name}_Annotation.png"), subject, cohort=cohort)


SEEN = case_records([case("010_HC", "010"), case("020_HC", "020")])


def test_records_round_trip_through_csv(tmp_path: Path) -> None:
    path = write_training_cases(tmp_path / "training_cases.csv", SEEN)
    assert read_training_cases(path) == SEEN
    assert (tmp_path / "training_cases.csv").stat().st_mode & 0o044  # readable by others (umask-respecting)
    with pytest.raises(DataError, match="missing"):
        read_training_cases(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("file,x\na,b\n")
    with pytest.raises(DataError, match="name, subject"):
        read_training_cases(tmp_path / "bad.csv")


def test_overlap_by_image_and_by_subject_within_a_cohort() -> None:
    held = [case("010_HC", "010"), case("020_2HC", "020"), case("030_HC", "030"), case("x", "020", "spanish")]
    assert find_overlap(SEEN, held) == ["010_HC (the same image)", "020_2HC (subject 020, as 020_HC)"]


def test_check_no_leak_names_the_cases_and_the_fix() -> None:
    check_no_leak(SEEN, {"test": [case("030_HC", "030")]}, model="M", fix="F")  # nothing shared: passes
    with pytest.raises(
        LeakageError, match=r"M was trained .* 1 test case\(s\): 020_2HC \(subject 020.*Fix: F"
    ):
        check_no_leak(SEEN, {"val": [], "test": [case("020_2HC", "020")]}, model="M", fix="F")


def test_synthetic_provenance_and_the_warning_without_one(tmp_path: Path, caplog) -> None:
    write_synthetic_provenance(tmp_path, {"sha256": "ab"}, SEEN)
    assert read_synthetic_provenance(tmp_path) == {"generator": {"sha256": "ab"}, "training_cases": SEEN}
    with caplog.at_level(logging.WARNING):
        assert read_synthetic_provenance(tmp_path / "old") is None
    assert "SYNTHETIC SET WITHOUT PROVENANCE" in caplog.text
    (tmp_path / "provenance.json").write_text(json.dumps({"generator": {}}))
    with pytest.raises(DataError, match="provenance"):
        read_synthetic_provenance(tmp_path)
