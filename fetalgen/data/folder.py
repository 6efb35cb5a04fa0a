"""Generic paired-folder datasets: how the Spanish and African cohorts, phantoms and user data are read.

Layout::

    <root>/images/<stem>.png                  grayscale or RGB (png, jpg, bmp, tif)
    <root>/masks/<stem>.png                   filled mask or outline; ``<stem>_Annotation.png`` also matches
    <root>/pixel_sizes.csv      (optional)    filename,pixel size(mm)
    <root>/heads.csv            (optional)    filename,head circumference (mm)

The subject is the ``Patient00188`` / ``patient001`` prefix of the stem where there is one, ``NNN`` of an HC18 name
(``NNN_HC``, ``NNN_kHC``), else the stem; the frame is ``k`` in ``..._k_of_n`` (or HC18's) names, else 1.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from fetalgen.data.cases import PLAUSIBLE_MM, Case, CaseList, DataError, implausible
from fetalgen.data.io import bad_input, check_on_bad, warn_skipped
from fetalgen.data.splits import read_case_list

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ANNOTATION_SUFFIX = "_Annotation"
PIXEL_SIZES_CSV, HEADS_CSV = "pixel_sizes.csv", "heads.csv"
_SUBJECT = re.compile(r"^(patient\d+)", re.IGNORECASE)
_FRAME = re.compile(r"_(\d+)_of_\d+$")
_HC18_NAME = re.compile(r"^(\d{3})_(\d*)HC$")  # HC18's NNN_HC / NNN_kHC, copied into a folder layout


def parse_subject(stem: str) -> tuple[str, int]:
    """``(subject, frame)`` of a file stem: ``Patient00188_Plane3_2_of_3`` -> ``("Patient00188", 2)``; HC18 names
    keep HC18's rule (``010_2HC`` -> ``("010", 2)``), so another frame of a subject is its subject here too."""
    hc18 = _HC18_NAME.match(stem)
    if hc18:
        return hc18.group(1), int(hc18.group(2) or 1)
    m = _SUBJECT.match(stem)
    f = _FRAME.search(stem)
    return (m.group(1) if m else stem), (int(f.group(1)) if f else 1)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The column names of a CSV and its rows as ``(line number, {column: value})``, names and values stripped."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in reader.fieldnames or []]
        rows = [
            (lineno, {k.strip(): (v or "").strip() for k, v in row.items() if k})
            for lineno, row in enumerate(reader, start=2)
        ]
    return fields, rows


def read_column_csv(path: Path, column: str) -> dict[str, float]:
    """``{file stem: value}`` from a CSV with a ``filename`` column and ``column``.

    Raises:
        DataError: the columns are missing, a value is not a finite positive number (every column read so is a
            size: a pixel size, a circumference), or a file has two rows.
    """
    out: dict[str, float] = {}
    lines: dict[str, int] = {}
    fields, rows = read_csv_rows(path)
    if "filename" not in fields or column not in fields:
        raise DataError(path, f"CSV needs columns 'filename' and '{column}', found {fields}")
    for lineno, row in rows:
        stem = Path(row["filename"]).stem
        if stem in lines:
            raise DataError(path, f"{row['filename']} has two rows (lines {lines[stem]} and {lineno})")
        lines[stem] = lineno
        try:
            value = float(row[column])
        except ValueError as err:
            raise DataError(path, f"line {lineno}: '{row[column]}' in '{column}' is not a number") from err
        if not (math.isfinite(value) and value > 0):
            raise DataError(
                path, f"line {lineno}: '{column}' must be a finite positive number, got {row[column]}"
            )
        what = next((k for k in PLAUSIBLE_MM if column.startswith(k)), None)
        if what is not None and (why := implausible(value, what)):
            raise DataError(path, f"line {lineno} ({row['filename']}): {why}")
        out[stem] = value
    return out


def _by_case(files: list[Path], what: str) -> dict[str, Path]:
    """``files`` by case name (a mask's ``_Annotation`` suffix dropped); a second file of one case is refused."""
    out: dict[str, Path] = {}
    for p in files:
        stem = (
            p.stem[: -len(ANNOTATION_SUFFIX)]
            if what == "mask" and p.stem.endswith(ANNOTATION_SUFFIX)
            else p.stem
        )
        if stem in out:
            raise DataError(p, f"a second {what} of case {stem} (the first: {out[stem].name}); keep one")
        out[stem] = p
    return out


def _listed(images: list[Path], list_file: str | Path, images_dir: Path) -> list[Path]:
    """The images ``list_file`` names, in its order; a listed name with no image is refused."""
    wanted = read_case_list(list_file)
    by_stem = {p.stem: p for p in images}
    missing = [n for n in wanted if n not in by_stem]
    if missing:
        raise DataError(list_file, f"{len(missing)} listed case(s) not in {images_dir}: {', '.join(missing)}")
    return [by_stem[n] for n in wanted]


def read_folder(
    root: str | Path,
    list_file: str | Path | None = None,
    cohort: str = "folder",
    on_bad: str = "raise",
    hint: str | None = None,
) -> list[Case]:
    """Read a paired folder (``images/`` + ``masks/``) into cases (sorted by name, or in list-file order).

    Args:
        root: dataset root.
        list_file: optional list of case names to keep (missing names raise).
        cohort: cohort name stored in each case.
        on_bad: ``"raise"`` on an image without mask or without a CSV row, or ``"skip"`` it with a warning
            that gives the count and the files.
        hint: how to get the data, added to the error when the folders are missing.

    Raises:
        DataError: no ``images/`` or ``masks/`` folder, an image without mask, a CSV without a row for an
            image (unless skipped), or list names not in the folder.
    """
    check_on_bad(on_bad)
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            fix = f"; {hint}" if hint else ""
            raise DataError(
                d, f"folder missing: a paired dataset needs {root}/images/ and {root}/masks/{fix}"
            )
    masks = _by_case(_files(masks_dir), "mask")
    tables = {}
    for name, column in ((PIXEL_SIZES_CSV, "pixel size(mm)"), (HEADS_CSV, "head circumference (mm)")):
        if (root / name).is_file():
            tables[name] = read_column_csv(root / name, column)
    images = _files(images_dir)
    _by_case(images, "image")  # case names must be unique
    if list_file is not None:
        images = _listed(images, list_file, images_dir)
    cases, bad = [], []
    for img in images:
        with bad_input(on_bad, bad):
            if img.stem not in masks:
                raise DataError(
                    img,
                    f"no mask in {masks_dir} (looked for {img.stem}.* and {img.stem}{ANNOTATION_SUFFIX}.*)",
                )
            values = {}
            for name, table in tables.items():
                if img.stem not in table:
                    raise DataError(img, f"no row in {root / name}")
                values[name] = table[img.stem]
            subject, frame = parse_subject(img.stem)
            cases.append(Case(img.stem, img, masks[img.stem], subject=subject, frame=frame, cohort=cohort,
                              pixel_size_mm=values.get(PIXEL_SIZES_CSV), hc_mm=values.get(HEADS_CSV)))  # fmt: skip
    warn_skipped(bad, f"read_folder({root})")
    if not cases:
        raise DataError(images_dir, "no usable image/mask pairs found")
    return CaseList(cases if list_file is not None else sorted(cases, key=lambda c: c.name), bad)
