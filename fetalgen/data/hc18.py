"""The HC18 challenge data in its official layout (van den Heuvel et al., PLOS ONE 2018; Zenodo 1327317).

Layout::

    <root>/training_set/NNN_HC.png               image of subject NNN (frame 1)
    <root>/training_set/NNN_kHC.png              k-th frame of subject NNN (``010_2HC.png``: frame 2)
    <root>/training_set/NNN_kHC_Annotation.png   1-pixel ellipse outline of the head (filled on load)
    <root>/training_set_pixel_size_and_HC.csv    filename,pixel size(mm),head circumference (mm)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from fetalgen.data.cases import Case, CaseList, DataError
from fetalgen.data.folder import read_column_csv
from fetalgen.data.io import bad_input, check_on_bad, warn_skipped
from fetalgen.data.splits import read_case_list

TRAINING_DIR = "training_set"
TRAINING_CSV = "training_set_pixel_size_and_HC.csv"
HOW_TO_GET = "run `make data` (fetalgen-download hc18 --out data/hc18) or set FETALGEN_HC18_DIR"
_NAME = re.compile(r"^(\d+)_(\d*)HC$")
# Hadlock head circumference at the trimester boundaries: ~100 mm at 14 weeks, ~260 mm at 28 weeks.
TRIMESTER_HC_MM = (100.0, 260.0)


def parse_name(stem: str) -> tuple[str, int]:
    """``(subject, frame)`` of an HC18 stem: ``010_2HC`` -> ``("010", 2)``, ``010_HC`` -> ``("010", 1)``.

    Raises:
        ValueError: not an HC18 image name.
    """
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"not an HC18 image name: {stem!r} (expected NNN_HC or NNN_kHC)")
    return m.group(1), int(m.group(2) or 1)


def trimester_from_hc(hc_mm: float | None) -> int:
    """Trimester (0, 1, 2) from the head circumference; -1 when unknown (``None`` or nan).

    HC < 100 mm is first trimester (before ~14 weeks), < 260 mm second (before ~28 weeks), else third,
    using Hadlock's HC-for-gestational-age curve at the trimester boundaries.
    """
    if hc_mm is None or math.isnan(hc_mm):
        return -1
    return 0 if hc_mm < TRIMESTER_HC_MM[0] else 1 if hc_mm < TRIMESTER_HC_MM[1] else 2


def read_hc18(root: str | Path, list_file: str | Path | None = None, on_bad: str = "raise") -> list[Case]:
    """Read the HC18 training set into cases (cohort ``hc18``), sorted by name or in list-file order.

    Args:
        root: folder holding ``training_set/`` and ``training_set_pixel_size_and_HC.csv``.
        list_file: optional list of case names to keep (``010_2HC`` or ``010_2HC.png``, one a line).
        on_bad: ``"raise"`` on an image without annotation or without CSV row, or ``"skip"`` it with a
            warning that gives the count and the files.

    Raises:
        DataError: missing folder or CSV (the message says how to get the data), an image without
            annotation or CSV row (unless skipped), or list names not in the data.
    """
    check_on_bad(on_bad)
    root = Path(root)
    folder, csv_path = root / TRAINING_DIR, root / TRAINING_CSV
    if not folder.is_dir():
        raise DataError(folder, f"HC18 training set not found: {HOW_TO_GET}")
    if not csv_path.is_file():
        raise DataError(csv_path, f"HC18 pixel-size/HC table not found: {HOW_TO_GET}")
    pixel = read_column_csv(csv_path, "pixel size(mm)")
    hc = read_column_csv(csv_path, "head circumference (mm)")
    images = {p.stem: p for p in folder.glob("*HC.png")}
    names = sorted(images)
    if list_file is not None:
        names = read_case_list(list_file)
        missing = [n for n in names if n not in images]
        if missing:
            raise DataError(list_file, f"{len(missing)} listed case(s) not in {folder}: {', '.join(missing)}")
    cases, bad = [], []
    for name in names:
        image = images[name]
        annotation = folder / f"{name}_Annotation.png"
        try:
            subject, frame = parse_name(name)
        except ValueError as err:
            raise DataError(image, str(err)) from err
        with bad_input(on_bad, bad):
            if not annotation.is_file():
                raise DataError(image, f"annotation {annotation.name} is missing")
            if name not in pixel:
                raise DataError(image, f"no row in {csv_path}")
            cases.append(Case(name, image, annotation, subject=subject, frame=frame, pixel_size_mm=pixel[name],
                              hc_mm=hc[name], cohort="hc18"))  # fmt: skip
    warn_skipped(bad, f"read_hc18({root})")
    if not cases:
        raise DataError(folder, f"no HC18 image/annotation pairs found: {HOW_TO_GET}")
    return CaseList(cases, bad)
