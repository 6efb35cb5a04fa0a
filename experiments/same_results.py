"""Do two runs of a pipeline give the same results? The behaviour check of a refactor: run the demo (or any
preset) at the old and the new commit with the same seeds, then compare the two output folders.

    python experiments/same_results.py <out of the old commit> <out of the new commit>

Compared: every case list (``*.txt`` below ``split/``), every synthetic set (its image and mask files byte for byte,
each manifest line's fields but the paths), and every number of every ``metrics.json`` and ``summary.json`` found
at the same place in both (times and paths left out). Prints each difference and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SKIPPED_KEYS = ("time", "seconds", "path", "root", "checkpoint", "gallery", "out", "dir", "sha256")


def numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The leaves of a JSON value as ``(dotted key, value)``, keys naming times or paths left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not any(word in str(key).lower() for word in SKIPPED_KEYS):
                yield from numbers(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from numbers(item, f"{prefix}[{k}]")
    elif not isinstance(value, str) or not value.startswith("/"):
        yield prefix, value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare_json(old: Path, new: Path, name: str) -> list[str]:
    a, b = dict(numbers(json.loads(old.read_text()))), dict(numbers(json.loads(new.read_text())))
    out = [f"{name}: {k} only in the {'old' if k in a else 'new'} run" for k in sorted(set(a) ^ set(b))]
    return out + [
        f"{name}: {k} {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if not same(a[k], b[k])
    ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(old: Path, new: Path) -> tuple[list[str], int]:
    """The differences between the runs, and how many files were compared."""
    problems, compared = [], 0
    for path in sorted(old.rglob("*")):
        rel = path.relative_to(old)
        twin = new / rel
        wanted = path.name in ("metrics.json", "summary.json", "manifest.jsonl") or (
            path.suffix == ".txt" and "split" in rel.parts) or (path.suffix == ".png" and rel.parts[-2] in ("images", "masks"))  # fmt: skip
        if not path.is_file() or not wanted:
            continue
        if not twin.is_file():
            problems.append(f"{rel}: missing in the new run")
            continue
        compared += 1
        if path.suffix == ".json":
            problems += compare_json(path, twin, str(rel))
        elif path.name == "manifest.jsonl":
            for k, (a, b) in enumerate(
                zip(path.read_text().splitlines(), twin.read_text().splitlines(), strict=False)
            ):
                problems += compare_json_lines(a, b, f"{rel} line {k + 1}")
        elif digest(path) != digest(twin):
            problems.append(f"{rel}: the files differ")
    return problems, compared


def compare_json_lines(a: str, b: str, name: str) -> list[str]:
    old, new = dict(numbers(json.loads(a))), dict(numbers(json.loads(b)))
    return [
        f"{name}: {k} {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if not same(old.get(k), new.get(k))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    problems, compared = compare(args.old, args.new)
    for line in problems:
        print(line)
    print(
        f"{compared} files compared: {'the same results' if not problems else f'{len(problems)} differences'}"
    )
    return 1 if problems or not compared else 0


if __name__ == "__main__":
    sys.exit(main())
