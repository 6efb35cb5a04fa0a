"""Unlabelled images to segment (``fetalgen-predict``): any of the supported layouts, masks not needed.

Layouts of ``root``:

* ``<root>/images/*`` (the folder layout; ``masks/`` beside it is ignored), pixel sizes from
  ``<root>/pixel_sizes.csv`` when present;
* image files directly in ``root`` (e.g. HC18's ``test_set/`` or ``training_set/``; ``*_Annotation.*`` files are
  left out), pixel sizes from ``<root>.name + _pixel_size*.csv`` beside the folder (HC18's
  ``test_set_pixel_size.csv``) or ``pixel_sizes.csv`` inside it.

A CSV given explicitly (``filename`` and ``pixel size(mm)`` columns) wins over the detected one. DICOM files
(``.dcm``) are read frame by frame, their pixel size from the header first (:mod:`fetalgen.data.dicom`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetalgen.data.cases import CaseList, DataError
from fetalgen.data.dicom import DICOM_EXTS, dicom_pixel_size, frame_count, load_dicom_frame
from fetalgen.data.folder import (
    ANNOTATION_SUFFIX,
    IMAGE_EXTS,
    PIXEL_SIZES_CSV,
    read_column_csv,
    read_csv_rows,
)
from fetalgen.data.io import bad_input, check_on_bad, load_image, warn_skipped

PIXEL_COLUMN = "pixel size(mm)"
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels


@dataclass(frozen=True)
class ImageFile:
    """One image to segment: its name (file stem; ``<stem>_f<frame>`` for a frame of a multi-frame DICOM), path,
    pixel size in mm (nan when unknown) and, for DICOM, the frame."""

    name: str
    path: Path
    pixel_size_mm: float = math.nan
    frame: int | None = None

    def load(self) -> np.ndarray:
        """The image as uint8 HxW grayscale (:func:`~fetalgen.data.io.load_image`, or the DICOM frame)."""
        if self.frame is not None:
            return load_dicom_frame(self.path, self.frame)
        return load_image(self.path)


def image_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` (sorted), annotations (``*_Annotation.*``) left out; duplicate stems refused."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in (*IMAGE_EXTS, *DICOM_EXTS)
        and not p.stem.endswith(ANNOTATION_SUFFIX)
    )
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise DataError(
                p, f"a second image named {p.stem} (the first: {seen[p.stem].name}); names must be unique"
            )
        seen[p.stem] = p
    return files


def detect_pixel_csv(root: Path, folder: Path) -> Path | None:
    """The pixel-size CSV of a layout: ``pixel_sizes.csv`` in ``root``, or HC18's ``<folder>_pixel_size*.csv``."""
    if (root / PIXEL_SIZES_CSV).is_file():
        return root / PIXEL_SIZES_CSV
    found = sorted(folder.parent.glob(f"{folder.name}_pixel_size*.csv"))
    return found[0] if found else None


def read_images(root: str | Path, pixel_sizes: str | Path | None = None, on_bad: str = "raise") -> CaseList:
    """The images under ``root`` (see the module doc) with their pixel sizes, as a :class:`CaseList` of
    :class:`ImageFile` sorted by name.

    Args:
        root: the folder.
        pixel_sizes: a CSV (``filename``, ``pixel size(mm)``); None: the layout's own CSV, if any.
        on_bad: an image without a CSV row (when a CSV is used): ``raise`` or ``skip`` (counted, listed).

    Raises:
        DataError: no such folder, no image in it, a CSV without the columns or with two rows for one file, an
            image without a CSV row (unless skipped).
    """
    check_on_bad(on_bad)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "folder of images not found")
    folder = root / "images" if (root / "images").is_dir() else root
    files = image_files(folder)
    if not files:
        subfolders = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
        raise DataError(
            folder,
            f"no image files ({', '.join(IMAGE_EXTS)}); sub-folders: {subfolders} (point at one of them?)",
        )
    csv_path = Path(pixel_sizes) if pixel_sizes else detect_pixel_csv(root, folder)
    if csv_path is not None and not csv_path.is_file():
        raise DataError(csv_path, "pixel-size CSV not found")
    table = read_column_csv(csv_path, PIXEL_COLUMN) if csv_path is not None else None
    items, skipped = [], []
    for p in files:
        with bad_input(on_bad, skipped):
            if p.suffix.lower() in DICOM_EXTS:
                items += dicom_items(p, table)
            elif table is not None and p.stem not in table:
                raise DataError(p, f"no row in {csv_path}")
            else:
                items.append(ImageFile(p.stem, p, table[p.stem] if table is not None else math.nan))
    warn_skipped(skipped, f"images in {folder}")
    return CaseList(items, skipped)


def dicom_items(path: Path, table: dict[str, float] | None) -> list[ImageFile]:
    """The frames of a DICOM file; the pixel size from its header (:mod:`fetalgen.data.dicom`), else the CSV row
    of the file, else unknown (nan: no mm figures, counted in the summary)."""
    size = dicom_pixel_size(path)
    if math.isnan(size) and table is not None and path.stem in table:
        size = table[path.stem]
    frames = frame_count(path)
    if frames == 1:
        return [ImageFile(path.stem, path, size, 0)]
    return [ImageFile(f"{path.stem}_f{i:03d}", path, size, i) for i in range(frames)]


def read_boxes(path: str | Path) -> dict[str, Box]:
    """``{file stem: (x0, y0, x1, y1)}`` in image pixels from a CSV with columns ``name, x0, y0, x1, y1``.

    Raises:
        DataError: a missing column, a value that is not a finite number, a box with x1 <= x0 or y1 <= y0, or a
            name with two rows. (Boxes are checked against their image when it is read: outside it is an error.)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "box CSV not found")
    out: dict[str, Box] = {}
    fields, rows = read_csv_rows(path)
    if not {"name", "x0", "y0", "x1", "y1"} <= set(fields):
        raise DataError(path, f"box CSV needs columns name, x0, y0, x1, y1; found {fields}")
    for lineno, row in rows:
        stem = Path(row["name"]).stem
        if stem in out:
            raise DataError(path, f"line {lineno}: a second box for {row['name']}")
        try:
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        except ValueError as err:
            raise DataError(path, f"line {lineno}: a box coordinate is not a number") from err
        if not all(math.isfinite(v) for v in box):
            raise DataError(path, f"line {lineno}: box {box} has a coordinate that is not finite")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(path, f"line {lineno}: box {box} needs x1 > x0 and y1 > y0")
        out[stem] = box  # type: ignore[assignment]
    return out


@dataclass(frozen=True)
class ImageFolder:
    """What ``fetalgen-predict`` reads (``conf/predict.yaml``'s ``images``): a folder of images, their pixel sizes
    (:func:`read_images`) and optional boxes (:func:`read_boxes`), built by Hydra."""

    root: str | Path
    pixel_sizes: str | Path | None = None
    boxes: str | Path | None = None
    on_bad: str = "raise"  # an unreadable image or a missing CSV row: raise, or skip (counted, listed)

    def read(self) -> tuple[CaseList, dict[str, Box]]:
        """The images and their given boxes by name.

        Raises:
            DataError: what :func:`read_images` and :func:`read_boxes` refuse, and a box for an image that is not
                in the folder.
        """
        items = read_images(self.root, self.pixel_sizes, self.on_bad)
        boxes = read_boxes(self.boxes) if self.boxes else {}
        unknown = sorted(set(boxes) - {item.name for item in items})
        if unknown:
            raise DataError(
                Path(self.boxes), f"boxes for images not in {self.root}: {', '.join(unknown[:5])}"
            )
        return items, boxes
