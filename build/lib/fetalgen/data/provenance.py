"""Which labelled cases a model has seen, written beside every run, and the check that keeps them off test sets.

Every training run writes ``training_cases.csv`` (:data:`TRAINING_CASES`) into its run folder and the same
records into its checkpoint; ``fetalgen-sample`` copies the generator's records into ``provenance.json`` of
the synthetic set (:data:`PROVENANCE`). Before a model is evaluated, :func:`check_no_leak` refuses any held-out
case whose image or subject a model in its lineage (SAM, or the generator of its synthetic pairs) trained on.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fetalgen.data.cases import Case, DataError
from fetalgen.utils.files import atomic_write, write_json

log = logging.getLogger(__name__)

TRAINING_CASES = "training_cases.csv"
PROVENANCE = "provenance.json"
# The entry of a Lightning checkpoint (both tasks) holding {"training_cases": [...], "generator_cases": [...]}.
CHECKPOINT_KEY = "fetalgen_provenance"
FIELDS = ("name", "subject", "cohort", "image_path", "mask_path", "pixel_size_mm")

Record = dict[str, str]


class LeakageError(ValueError):
    """A held-out case (or its subject) was seen in training by a model in the evaluated lineage."""


def case_records(cases: Iterable[Case]) -> list[Record]:
    """Plain records of cases (:data:`FIELDS`, all strings; JSON- and CSV-safe)."""
    return [
        {"name": c.name, "subject": c.subject, "cohort": c.cohort, "image_path": str(c.image_path),
         "mask_path": str(c.mask_path), "pixel_size_mm": "" if c.pixel_size_mm is None else str(c.pixel_size_mm)}
        for c in cases
    ]  # fmt: skip


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


def write_synthetic_provenance(root: str | Path, generator: Mapping[str, Any], records: list[Record]) -> Path:
    """``<root>/provenance.json``: the generator (checkpoint, hash, step) and the cases it was trained on."""
    return write_json(Path(root) / PROVENANCE, {"generator": dict(generator), "training_cases": records})


def read_synthetic_provenance(root: str | Path) -> dict[str, Any] | None:
    """The provenance of a synthetic set, or None (with a loud warning) for a set written without one."""
    path = Path(root) / PROVENANCE
    if not path.is_file():
        log.warning(
            "SYNTHETIC SET WITHOUT PROVENANCE: %s has no %s (written by an older fetalgen-sample?). The cases "
            "its generator was trained on are unknown, so test leakage through it cannot be ruled out. "
            "Re-sample it with the current fetalgen-sample.",
            root, PROVENANCE,
        )  # fmt: skip
        return None
    try:
        data = json.loads(path.read_text())
        records = list(data["training_cases"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(path, f"not a synthetic-set provenance file: {err}") from err
    return {"generator": data.get("generator", {}), "training_cases": records}


def find_overlap(seen: Iterable[Record], held_out: Iterable[Case]) -> list[str]:
    """Held-out cases that are a seen case or share its subject (within one cohort), described one a line."""
    names = {r["name"]: r for r in seen}
    subjects = {(r.get("cohort", ""), r["subject"]): r["name"] for r in names.values()}
    found = []
    for case in held_out:
        if case.name in names:
            found.append(f"{case.name} (the same image)")
        elif (case.cohort, case.subject) in subjects:
            found.append(f"{case.name} (subject {case.subject}, as {subjects[(case.cohort, case.subject)]})")
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
