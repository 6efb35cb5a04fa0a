"""The ``fetalgen-split`` task: fix the protocol split once, before any model is trained.

The folder it writes (``train.txt`` = the training pool, ``val.txt``, ``test.txt``, ``split.json``) is the
``data.split_file`` of every later step: the generator picks its training pairs from the pool, SAM picks its
N_real pairs from the same pool, and both are validated and tested on the same held-out subjects.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fetalgen.data.cases import Case, DataError
from fetalgen.data.io import check_on_bad
from fetalgen.data.splits import holdout_split, read_case_list, write_split

log = logging.getLogger(__name__)


def make_split(
    cases: list[Case],
    out: str | Path,
    num_val: int,
    num_test: int,
    seed: int,
    pool_list: str | Path | None = None,
    pool_missing: str = "raise",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Split ``cases`` into training pool, validation and test subjects and write the folder ``out``.

    Args:
        cases: every real case of the cohort.
        out: the split folder (created).
        num_val, num_test: held-out images, as whole subjects, drawn by ``seed``.
        pool_list: a case list fixing the training pool (e.g. the paper's); held-out subjects come from
            outside it. None: the pool is every case not held out.
        pool_missing: ``raise`` when listed pool cases are absent from the data, or ``skip`` them (they are
            counted and named in ``split.json`` and in a warning).
        overwrite: replace a different split already in ``out`` (the same split written again is fine).

    Raises:
        ValueError: no cases, or an empty training pool.
        FileExistsError: ``out`` holds another split (runs trained on it would lose their protocol).

    Returns:
        ``split.json``'s content: the settings, counts per part and any pool cases missing from the data.
    """
    check_on_bad(pool_missing)
    pool, missing = None, []
    if pool_list is not None:
        pool = read_case_list(pool_list)
        present = {c.name for c in cases}
        missing = [n for n in pool if n not in present]
        if missing and pool_missing == "raise":
            raise DataError(
                pool_list,
                f"{len(missing)} listed case(s) not found in the data: {', '.join(missing[:20])}"
                f"{' ...' if len(missing) > 20 else ''} (pool_missing=skip uses the others and records these)",
            )
        if missing:
            log.warning(
                "%d of %d pool cases listed in %s are not in the data; skipped and recorded in split.json",
                len(missing), len(pool), pool_list,
            )  # fmt: skip
        pool = [n for n in pool if n in present]
    if not cases:
        raise ValueError("no cases to split: the data source is empty (check data.source)")
    parts = holdout_split(cases, num_val, num_test, seed, pool=pool, pool_source=pool_list or "pool list")
    if not parts["train"]:
        raise ValueError(
            f"the training pool is empty ({len(cases)} case(s), num_val={num_val}, num_test={num_test})"
        )
    existing = Path(out) / "train.txt"
    if existing.is_file() and not overwrite:
        written = {p: read_case_list(Path(out) / f"{p}.txt") for p in ("train", "val", "test")}
        if written != {p: [c.name for c in parts[p]] for p in ("train", "val", "test")}:
            raise FileExistsError(f"{out} holds another split: every run trained on it relies on it; write to a "
                                  "new folder, or overwrite=true")  # fmt: skip
    info = {
        "seed": seed,
        "num_val": num_val,
        "num_test": num_test,
        "pool_list": None if pool_list is None else str(pool_list),
        "pool_missing": missing,
        "cohorts": sorted({c.cohort for c in cases}),
    }
    write_split(out, parts, info)
    log.info(
        "split written to %s: pool %d, val %d, test %d images",
        out, len(parts["train"]), len(parts["val"]), len(parts["test"]),
    )  # fmt: skip
    return {**info, "n_pool": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"]),
            "out": str(out)}  # fmt: skip


def restrict_pool(split: str | Path, names: list[str], out: str | Path) -> Path:
    """A copy of the split folder ``split`` whose training pool is only ``names`` (same val/test lists).

    Used for the label-budget reference: real-only training on exactly the cases a generator saw.

    Raises:
        DataError: a name is not in the pool of ``split``.
    """
    split, out = Path(split), Path(out)
    pool = set(read_case_list(split / "train.txt"))
    outside = [n for n in names if n not in pool]
    if outside:
        raise DataError(
            split / "train.txt", f"{len(outside)} case(s) are not in the pool: {', '.join(outside[:20])}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("".join(f"{n}\n" for n in names))
    for part in ("val", "test"):
        (out / f"{part}.txt").write_text((split / f"{part}.txt").read_text())
    return out
