"""Which labelled cases a model has seen, written beside every run, and the check that keeps them off test sets.

Every training run writes ``training_cases.csv`` (:data:`TRAINING_CASES`) into its run folder and the same
records into its checkpoint; ``fetalgen-sample`` copies the generator's records into ``provenance.json`` of
the synthetic set (:data:`PROVENANCE`). Before a model is evaluated, :func:`check_no_leak` refuses any held-out
case whose image or subject a model in its lineage (SAM, or the generator of its synthetic pairs) trained on: by
name and subject, and by pixel content (every record carries the image's fingerprint, :mod:`fetalgen.data.
fingerprint`), so a copy under another name is found too.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fetalgen.data.cases import Case, DataError
from fetalgen.data.fingerprint import Fingerprint, find_copies, fingerprint_file
from fetalgen.utils.checkpoints import read_run_checkpoint
from fetalgen.utils.files import atomic_write, sha256_file, write_json

log = logging.getLogger(__name__)

TRAINING_CASES = "training_cases.csv"
PROVENANCE = "provenance.json"
FIELDS = ("name", "subject", "cohort", "image_path", "mask_path", "pixel_size_mm", "fingerprint", "labelled")
UNLABELLED = "no"  # the ``labelled`` field of an image seen without its mask (older records: labelled)

Record = dict[str, str]


class LeakageError(ValueError):
    """A held-out case (or its subject) was seen in training by a model in the evaluated lineage."""


def case_records(cases: Iterable[Case], labelled: bool = True) -> list[Record]:
    """Plain records of cases (:data:`FIELDS`, all strings; JSON- and CSV-safe), each with its image's
    fingerprint (the image is read; an unreadable one gets none). ``labelled=False``: images a model saw without
    their masks (the unlabelled pool); no mask path is recorded."""
    return [
        {"name": c.name, "subject": c.subject, "cohort": c.cohort, "image_path": str(c.image_path),
         "mask_path": str(c.mask_path) if labelled else "",
         "pixel_size_mm": "" if c.pixel_size_mm is None else str(c.pixel_size_mm),
         "fingerprint": _fingerprint_text(c.image_path), "labelled": "yes" if labelled else UNLABELLED}
        for c in cases
    ]  # fmt: skip


def is_labelled(record: Record) -> bool:
    """Whether a record's mask was seen (records of older fetalgen versions, without the field, were)."""
    return record.get("labelled", "yes") != UNLABELLED


def labelled_names(records: Iterable[Record]) -> set[str]:
    """The real images among ``records`` whose masks were seen: the labels behind a model (synthetic pairs and
    pseudo-labels are no labels, images seen without masks neither)."""
    return {r["name"] for r in records if is_labelled(r) and r.get("cohort") != "synthetic"}


def label_counts(records: Iterable[Record]) -> dict[str, int]:
    """Distinct labels (:func:`labelled_names`) and unlabelled images among ``records`` (by name; an image seen
    both ways counts as labelled): the two numbers every table reports."""
    records = list(records)
    labelled = labelled_names(records)
    unlabelled = {r["name"] for r in records if not is_labelled(r)}
    return {"labelled": len(labelled), "unlabelled": len(unlabelled - labelled)}


@functools.lru_cache(maxsize=4096)
def _cached_fingerprint(path: str, mtime_ns: int, size: int) -> Fingerprint:
    return fingerprint_file(path)


def case_fingerprint(path: str | Path) -> Fingerprint | None:
    """The fingerprint of an image file (cached by path, time and size), None when it cannot be read."""
    try:
        stat = Path(path).stat()
        return _cached_fingerprint(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, DataError):
        return None


def _fingerprint_text(path: str | Path) -> str:
    fp = case_fingerprint(path)
    return fp.encode() if fp is not None else ""


def record_case(record: Record) -> Case:
    """The :class:`Case` of a record (back to the files it names)."""
    size = record.get("pixel_size_mm") or None
    return Case(
        record["name"], Path(record["image_path"]), Path(record["mask_path"]), record["subject"],
        pixel_size_mm=None if size is None else float(size), cohort=record.get("cohort", ""),
    )  # fmt: skip


def write_training_cases(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records as CSV (one row per case, columns :data:`FIELDS`)."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)

    return atomic_write(path, _write)


def read_training_cases(path: str | Path) -> list[Record]:
    """Records from a :data:`TRAINING_CASES` file.

    Raises:
        DataError: missing file or a header without ``name``/``subject``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "training case list is missing")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"name", "subject"} <= set(rows[0]):
        raise DataError(path, f"training case list needs the columns name, subject; has {sorted(rows[0])}")
    return rows


class UnverifiedSetError(DataError):
    """A synthetic set whose provenance is missing or does not match its files."""


def write_synthetic_provenance(
    root: str | Path, generator: Mapping[str, Any], records: list[Record], shape_prior: dict | None = None
) -> Path:
    """``<root>/provenance.json``: the generator (checkpoint, hash, step), the cases it was trained on, the head-shape
    prior its masks were drawn from (mask-conditioned sets), and the hash of the set's final ``manifest.jsonl``;
    written once the set is complete (and judged)."""
    root = Path(root)
    manifest = root / "manifest.jsonl"
    return write_json(root / PROVENANCE, {"generator": dict(generator), "training_cases": records,
                                          "shape_prior": shape_prior, "manifest_sha256": sha256_file(manifest)})  # fmt: skip


def read_synthetic_provenance(root: str | Path, allow_unverified: bool = False) -> dict[str, Any] | None:
    """The provenance of a synthetic set, verified against its files: the manifest's hash, the generator hash
    of every manifest line, and, where the generator checkpoint is still at its recorded path with its recorded
    hash, the cases that checkpoint lists.

    Raises:
        UnverifiedSetError: no provenance, or one that does not match (unless ``allow_unverified``: then a loud
            warning, and the provenance as it is, or None).
    """
    root = Path(root)
    path = root / PROVENANCE
    try:
        if not path.is_file():
            raise UnverifiedSetError(path, "missing: the cases its generator was trained on are unknown, so test "
                                           "leakage through it cannot be ruled out; re-sample the set")  # fmt: skip
        try:
            data = json.loads(path.read_text())
            records = list(data["training_cases"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(path, f"not a synthetic-set provenance file: {err}") from err
        verify_synthetic_provenance(root, data)
    except UnverifiedSetError as err:
        if not allow_unverified:
            raise UnverifiedSetError(
                err.path, f"{err.problem} (data.allow_unverified_synthetic=true uses it anyway)"
            ) from None
        log.warning("UNVERIFIED SYNTHETIC SET, used as asked (allow_unverified_synthetic): %s", err)
        return None if not path.is_file() else {"generator": {}, "training_cases": []}
    return {"generator": data.get("generator", {}), "training_cases": records}


def verify_synthetic_provenance(root: Path, data: Mapping[str, Any]) -> None:
    """Raise :class:`UnverifiedSetError` where ``provenance.json`` does not describe the files beside it."""
    path, manifest = root / PROVENANCE, root / "manifest.jsonl"
    if data.get("manifest_sha256") != (sha256_file(manifest) if manifest.is_file() else None):
        raise UnverifiedSetError(path, "its manifest hash does not match manifest.jsonl (edited, copied from "
                                       "another set, or the set changed after it was written)")  # fmt: skip
    generator = data.get("generator") or {}
    hashes = {json.loads(line).get("checkpoint_sha256") for line in manifest.read_text().splitlines() if line}
    if hashes != {generator.get("sha256")}:
        raise UnverifiedSetError(
            path, "the manifest's pairs come from another generator than the one it names"
        )
    checkpoint = Path(str(generator.get("checkpoint", "")))
    if checkpoint.is_file() and sha256_file(checkpoint) == generator.get("sha256"):
        # The checkpoint's task: a generator's, or a fine-tuned SAM's for a pseudo-labelled set (whose provenance
        # adds the unlabelled images it labelled). Listing more than the checkpoint is safe; leaving one out is not.
        task = generator.get("task", "diffusion")
        listed = {r["name"] for r in (read_run_checkpoint(checkpoint, task).provenance or {}).get(
            "training_cases", [])}  # fmt: skip
        if missing := listed - {r["name"] for r in data["training_cases"]}:
            raise UnverifiedSetError(path, f"it leaves out {len(missing)} of the training cases {checkpoint} "
                                           f"records (e.g. {sorted(missing)[0]})")  # fmt: skip
    else:  # what the generator trained on can only be taken from provenance.json as written
        log.warning("%s: its generator checkpoint %s is not at its recorded path with its recorded hash, so the "
                    "training cases it lists are taken as written, unchecked; keep the checkpoint there (or "
                    "re-sample the set) to have them checked", path, checkpoint)  # fmt: skip


def subject_key(cohort: str, name: str, subject: str) -> tuple[str, str]:
    """Who an image shows, for the subject check: an HC18-named image (``010_2HC``) is HC18's subject whatever
    folder layout it came in (another frame of that subject in a folder set is still that subject); otherwise the
    subject within its cohort."""
    from fetalgen.data.hc18 import parse_name

    try:
        return "hc18", parse_name(name)[0]
    except ValueError:
        return cohort, subject


def find_overlap(seen: Iterable[Record], held_out: Iterable[Case]) -> list[str]:
    """Held-out cases that are a seen case, share its subject (:func:`subject_key`), or whose image is a seen image
    under any name (its fingerprint: re-encoded, resized, rotated, flipped or inverted included), one a line."""
    seen = list(seen)
    names = {r["name"] for r in seen}
    subjects = {subject_key(r.get("cohort", ""), r["name"], r["subject"]): r["name"] for r in seen}
    found, rest = [], []
    for case in held_out:
        key = subject_key(case.cohort, case.name, case.subject)
        if case.name in names:
            found.append(f"{case.name} (the same image)")
        elif key in subjects:
            found.append(f"{case.name} (subject {key[1]}, as {subjects[key]})")
        else:
            rest.append(case)
    # Every record, not one per name: two cohorts may hold the same name for different images.
    seen_prints = [(r["name"], Fingerprint.decode(r["fingerprint"])) for r in seen if r.get("fingerprint")]
    if len(seen_prints) < len(seen):
        log.warning("%d training record(s) carry no image fingerprint (an older fetalgen): their pixels are not "
                    "compared with the held-out images", len(seen) - len(seen_prints))  # fmt: skip
    if older := sum(not fp.framed for _, fp in seen_prints):
        log.warning("%d training record(s) carry an older fetalgen's image fingerprint: compared with the held-out "
                    "images by exact pixels only (re-write the record to compare near copies)", older)  # fmt: skip
    held_prints = {c.name: fp for c in rest if (fp := case_fingerprint(c.image_path)) is not None}
    for held, seen_name, how in find_copies(held_prints, seen_prints):
        found.append(f"{held} (its image is {seen_name}'s: {how})")
    return found


def check_no_leak(
    seen: Iterable[Record], held_out: Mapping[str, Iterable[Case]], model: str, fix: str
) -> None:
    """Raise :class:`LeakageError` if any held-out case (or its subject) is among the ``seen`` training cases.

    Args:
        seen: the training records of ``model``.
        held_out: ``{split or test-set name: cases}``.
        model: what saw ``seen`` (named in the error).
        fix: how to repair the protocol (added to the error).
    """
    seen = list(seen)
    problems = []
    for split, cases in held_out.items():
        overlap = find_overlap(seen, cases)
        if overlap:
            shown = ", ".join(overlap[:20]) + (f" and {len(overlap) - 20} more" if len(overlap) > 20 else "")
            problems.append(f"{len(overlap)} {split} case(s): {shown}")
    if problems:
        raise LeakageError(
            f"TEST LEAKAGE: {model} was trained on images or subjects that are held out for evaluation: "
            + "; ".join(problems)
            + f". Fix: {fix}"
        )
