"""Subject-wise splits and case lists.

A split never puts one subject in two parts; it is a pure function of the cases and the seed.
List files hold one case name a line (the file name or its stem; blank lines and ``#`` comments ignored).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from fetalgen.data.cases import Case, DataError

SPLITS = ("train", "val", "test")


def read_case_list(path: str | Path) -> list[str]:
    """Case names from a list file, one a line; extensions are stripped (``010_2HC.png`` -> ``010_2HC``).

    Raises:
        DataError: the file is missing or lists a name twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "case list file is missing")
    names: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(_stem(line))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(path, f"case list names {len(dupes)} case(s) twice: {', '.join(dupes)}")
    return names


def _stem(name: str) -> str:
    name = Path(name).name
    suffix = Path(name).suffix.lower()
    return name[: -len(suffix)] if suffix in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} else name


def select_cases(cases: Iterable[Case], names: Iterable[str], source: str | Path = "case list") -> list[Case]:
    """The cases named in ``names``, in that order.

    Raises:
        DataError: some names are not among ``cases`` (all of them are listed); ``source`` names the list.
    """
    by_name = {c.name: c for c in cases}
    names = [_stem(n) for n in names]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(source, f"{len(missing)} listed case(s) not found in the data: {', '.join(missing)}")
    return [by_name[n] for n in names]


def split_by_subject(cases: list[Case], sizes: Mapping[str, int], seed: int) -> dict[str, list[Case]]:
    """Split cases into parts of given image counts without sharing a subject between parts.

    Subjects are shuffled by ``seed`` and given whole to the parts in order; a subject that would overshoot
    a part is passed over for a later one, so each part gets exactly its size whenever the subject sizes allow.

    Args:
        cases: all cases.
        sizes: images per part, e.g. ``{"train": 20, "val": 10, "test": 0}``.
        seed: shuffling seed (same cases and seed, same split).

    Returns:
        ``{part: cases}`` (each part sorted by name), one entry per key of ``sizes``.

    Raises:
        ValueError: a negative size, more images asked for than exist, or subjects that cannot be packed
            into the exact sizes.
    """
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {dict(sizes)}")
    total = sum(sizes.values())
    if total > len(cases):
        raise ValueError(f"split sizes {dict(sizes)} need {total} images but only {len(cases)} are available")
    by_subject: dict[str, list[Case]] = defaultdict(list)
    for c in sorted(cases, key=lambda c: c.name):
        by_subject[c.subject].append(c)
    subjects = sorted(by_subject)
    order = np.random.default_rng(seed).permutation(len(subjects))
    pool = [subjects[i] for i in order]
    out: dict[str, list[Case]] = {}
    for part, size in sizes.items():
        chosen: list[Case] = []
        rest = []
        for subj in pool:
            group = by_subject[subj]
            if len(chosen) + len(group) <= size:
                chosen.extend(group)
            else:
                rest.append(subj)
        if len(chosen) != size:
            raise ValueError(
                f"cannot fill split '{part}' with exactly {size} images from whole subjects "
                f"(got {len(chosen)}; {len(rest)} subjects left with {sum(len(by_subject[s]) for s in rest)} "
                "images): change the sizes or the seed"
            )
        out[part] = sorted(chosen, key=lambda c: c.name)
        pool = rest
    return out


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """Case names per split from a YAML/JSON file (``{train: [...], val: [...], test: [...]}``) or a
    directory with ``train.txt``, ``val.txt`` and optionally ``test.txt``.

    Raises:
        DataError: missing file, unknown split names, or a case in two splits.
    """
    path = Path(path)
    if path.is_dir():
        out = {}
        for part in SPLITS:
            f = path / f"{part}.txt"
            if f.is_file():
                out[part] = read_case_list(f)
            elif part != "test":
                raise DataError(f, f"split directory {path} has no {part}.txt")
    elif path.is_file():
        text = path.read_text()
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
        if not isinstance(raw, dict) or not set(raw) <= set(SPLITS) or "train" not in raw:
            raise DataError(
                path, f"split file must map train/val[/test] to lists of case names, got {raw!r:.200}"
            )
        out = {k: [_stem(str(n)) for n in (v or [])] for k, v in raw.items()}
    else:
        raise DataError(path, "split file is missing")
    seen: dict[str, str] = {}
    for part, names in out.items():
        for n in names:
            if n in seen:
                raise DataError(path, f"case {n} is in both '{seen[n]}' and '{part}'")
            seen[n] = part
    out.setdefault("val", [])
    out.setdefault("test", [])
    return out


def holdout_split(
    cases: list[Case],
    num_val: int,
    num_test: int,
    seed: int,
    pool: Iterable[str] | None = None,
    pool_source: str | Path = "pool list",
) -> dict[str, list[Case]]:
    """The protocol split: held-out test and validation subjects, and the training pool from the rest.

    Every later step (generator, SAM, evaluation) reads this one split, so no held-out subject can reach a
    model. Changing ``num_real`` later picks from ``train`` and leaves ``val``/``test`` unchanged.

    Args:
        cases: every real case of the cohort.
        num_val, num_test: held-out images (whole subjects, seeded).
        seed: the split seed.
        pool: names of a fixed training pool (e.g. the paper's list); val/test then come from the subjects
            outside it. None: the pool is every case not held out.
        pool_source: names the pool list in errors.

    Returns:
        ``{"train": pool, "val": ..., "test": ...}``, each sorted by name; no subject is in two parts.
    """
    if pool is not None:
        train = sorted(select_cases(cases, pool, pool_source), key=lambda c: c.name)
        pooled = {c.subject for c in train}
        rest = [c for c in cases if c.subject not in pooled]
        held = split_by_subject(rest, {"test": num_test, "val": num_val}, seed)
    else:
        held = split_by_subject(cases, {"test": num_test, "val": num_val}, seed)
        taken = {c.subject for part in held.values() for c in part}
        train = [c for c in sorted(cases, key=lambda c: c.name) if c.subject not in taken]
    return {"train": train, "val": held["val"], "test": held["test"]}


def write_split(folder: str | Path, parts: Mapping[str, list[Case]], info: Mapping[str, object]) -> Path:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` (case names) and ``split.json`` (``info`` and counts).

    The folder is what ``data.split_file`` reads (:func:`read_split_file`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for part in SPLITS:
        names = [c.name for c in parts.get(part, [])]
        (folder / f"{part}.txt").write_text("".join(f"{n}\n" for n in names))
    counts = {
        part: {"images": len(cases), "subjects": len({c.subject for c in cases})}
        for part, cases in parts.items()
    }
    (folder / "split.json").write_text(
        json.dumps({**info, "counts": counts}, indent=2, sort_keys=True) + "\n"
    )
    return folder
