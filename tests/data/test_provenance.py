"""Provenance records and the leakage check: hand-made cases."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fetalgen.data.cases import Case, DataError
from fetalgen.data.provenance import (
    LeakageError,
    UnverifiedSetError,
    case_records,
    check_no_leak,
    find_overlap,
    is_labelled,
    label_counts,
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


def synthetic_set(root: Path, sha: str = "ab") -> Path:
    """A two-line manifest of generator ``sha`` (the files themselves are not needed here)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"index": i, "checkpoint_sha256": sha}) for i in range(2)]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_a_set_is_used_only_with_a_provenance_that_matches_its_files(tmp_path: Path, caplog) -> None:
    root = synthetic_set(tmp_path / "a")
    write_synthetic_provenance(root, {"sha256": "ab"}, SEEN)
    assert read_synthetic_provenance(root) == {"generator": {"sha256": "ab"}, "training_cases": SEEN}
    # deleted: refused, unless the user says so (then a loud warning)
    (root / "provenance.json").rename(tmp_path / "kept.json")
    with pytest.raises(UnverifiedSetError, match="provenance.json: missing.*allow_unverified_synthetic=true"):
        read_synthetic_provenance(root)
    with caplog.at_level(logging.WARNING):
        assert read_synthetic_provenance(root, allow_unverified=True) is None
    assert "UNVERIFIED SYNTHETIC SET" in caplog.text
    # copied from another set, or the set changed after it was written: the manifest hash differs
    other = synthetic_set(tmp_path / "b")
    (other / "manifest.jsonl").write_text(
        (other / "manifest.jsonl").read_text() + json.dumps({"index": 2}) + "\n"
    )
    (tmp_path / "kept.json").rename(other / "provenance.json")
    with pytest.raises(UnverifiedSetError, match="manifest hash does not match"):
        read_synthetic_provenance(other)
    # pairs of another generator than the one named
    third = synthetic_set(tmp_path / "c", sha="cd")
    write_synthetic_provenance(third, {"sha256": "ab"}, SEEN)
    with pytest.raises(UnverifiedSetError, match="another generator"):
        read_synthetic_provenance(third)
    (third / "provenance.json").write_text(json.dumps({"generator": {}}))
    with pytest.raises(DataError, match="not a synthetic-set provenance file"):
        read_synthetic_provenance(third)


def test_edited_training_cases_are_found_against_the_generator_checkpoint(tmp_path: Path, caplog) -> None:
    import torch

    from fetalgen.utils.files import sha256_file

    ckpt = tmp_path / "gen.ckpt"
    torch.save(
        {"state_dict": {}, "fetalgen_task": "diffusion", "fetalgen_provenance": {"training_cases": SEEN}},
        ckpt,
    )
    root = synthetic_set(tmp_path / "s", sha=sha256_file(ckpt))
    generator = {"checkpoint": str(ckpt), "sha256": sha256_file(ckpt)}
    write_synthetic_provenance(root, generator, SEEN)
    assert read_synthetic_provenance(root)["training_cases"] == SEEN
    write_synthetic_provenance(root, generator, SEEN[:1])  # a training case removed by hand, hash redone
    with pytest.raises(UnverifiedSetError, match="leaves out 1 of the training cases .*gen.ckpt records"):
        read_synthetic_provenance(root)
    extra = case_records([case("030_HC", "030")], labelled=False)  # more seen than the checkpoint lists: safe
    write_synthetic_provenance(root, generator, SEEN + extra)
    assert read_synthetic_provenance(root)["training_cases"] == SEEN + extra
    ckpt.rename(tmp_path / "moved.ckpt")  # then the edit cannot be checked: said, not passed in silence
    with caplog.at_level(logging.WARNING, logger="fetalgen.data.provenance"):
        read_synthetic_provenance(root)
    assert (
        "gen.ckpt is not at its recorded path" in caplog.text and "taken as written, unchecked" in caplog.text
    )


def test_a_held_out_image_is_found_under_any_name_by_its_pixels(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images = {n: cv2.GaussianBlur(rng.integers(0, 255, (90, 120), dtype=np.uint8), (9, 9), 3) for n in "abcd"}
    for n, image in images.items():
        cv2.imwrite(str(tmp_path / f"{n}.png"), image)
    seen = case_records([Case("912_HC", tmp_path / "a.png", tmp_path / "m.png", "912"),
                         Case("913_HC", tmp_path / "b.png", tmp_path / "m.png", "913")])  # fmt: skip
    cv2.imwrite(str(tmp_path / "b_mirror.jpg"), images["b"][:, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    held = [Case("012_HC", tmp_path / "a.png", tmp_path / "m.png", "012"),  # the same file, renamed
            Case("013_HC", tmp_path / "b_mirror.jpg", tmp_path / "m.png", "013"),  # mirrored and re-encoded
            Case("014_HC", tmp_path / "c.png", tmp_path / "m.png", "014")]  # another image: fine  # fmt: skip
    found = find_overlap(seen, held)
    assert found[0] == "012_HC (its image is 912_HC's: the same pixels)"
    assert found[1].startswith("013_HC (its image is 913_HC's: a mirrored near copy, similarity 0.99")
    assert len(found) == 2
    with pytest.raises(LeakageError, match="012_HC"):
        check_no_leak(seen, {"test": held}, model="M", fix="F")


def test_an_hc18_frame_in_a_folder_layout_is_still_its_hc18_subject(tmp_path: Path):
    from fetalgen.data.cases import Case
    from fetalgen.data.provenance import find_overlap

    seen = [{"name": "010_HC", "subject": "010", "cohort": "hc18"}]
    other_frame = Case(
        "010_2HC", tmp_path / "a.png", tmp_path / "a_mask.png", subject="010_2HC", cohort="folder"
    )
    unrelated = Case("scan_7", tmp_path / "b.png", tmp_path / "b_mask.png", subject="scan_7", cohort="folder")
    found = find_overlap(seen, [other_frame, unrelated])
    assert found == ["010_2HC (subject 010, as 010_HC)"]


def test_unlabelled_images_are_recorded_without_their_masks_and_counted_apart() -> None:
    pool = case_records([case("030_HC", "030"), case("010_HC", "010")], labelled=False)
    assert {r["mask_path"] for r in pool} == {""} and not any(is_labelled(r) for r in pool)
    assert all(is_labelled(r) for r in SEEN)
    older = [{k: v for k, v in r.items() if k != "labelled"} for r in SEEN]  # before the field existed
    assert all(is_labelled(r) for r in older)
    # 010_HC was seen with its mask too: it counts once, as labelled
    assert label_counts(SEEN + pool) == {"labelled": 2, "unlabelled": 1}
