"""What ``fetalgen-predict`` (:mod:`fetalgen.tasks.predict`) writes for unlabelled images: masks and head measurements.

Per image, under ``<out>/``: ``masks/<name>.png`` (0/255, the image's own size), ``ellipses/<name>.png`` (the
fitted ellipse filled: the shape the HC is measured on), ``overlays/<name>.png`` (the image, the mask's outline in
red, the fitted ellipse in green, the prompt box in yellow, the HC written in a corner), one row of
``measurements.csv``, and, where it has mm figures, one row of ``hc18_submission.csv`` (HC18 challenge format;
a frame of a cine file named ``<name><suffix>``). ``summary.json`` counts
what was done and skipped; ``skipped.txt`` lists skipped files.

The output folder is the run's own: an empty one (Hydra's files aside), or the folder of an interrupted run with
the same settings (``predict_settings.json``), which is resumed: the images listed in ``done.jsonl`` (appended once
an image's files are written) are skipped, temporary files of the kill removed. Anything else is refused.

Geometry: :mod:`fetalgen.segmentation.segmenter` (the same object as the Python API): the mask is predicted at the
working size, brought back to the image's own size, and the ellipse fitted there. HC18 columns: centre and semi-axes in mm, ``semi_axes_a_mm`` the semi-axis along
``angle_rad`` (the major one), the angle measured from the image x axis towards y (rows down), in [0, pi).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fetalgen.data.cases import DataError
from fetalgen.data.images import ImageFile
from fetalgen.data.io import bad_input, check_on_bad
from fetalgen.metrics.biometry import Ellipse, fitted_ellipse_mask
from fetalgen.segmentation.segmenter import HeadMeasurement, Segmenter, check_input
from fetalgen.utils.bars import progress_bar
from fetalgen.utils.files import append_line, json_safe, write_png

MEASUREMENTS, SUBMISSION = "measurements.csv", "hc18_submission.csv"
JOURNAL, SETTINGS = "done.jsonl", "predict_settings.json"  # the images done so far; what a resume must repeat


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The rows of the images done before (a last line cut by a kill is left out: that image is redone)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append({k: (math.nan if v is None else v) for k, v in json.loads(line).items()})
        except json.JSONDecodeError:
            continue
    return rows


SUBMISSION_COLUMNS = (
    "filename",
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
)


def measurement_row(item: ImageFile, head: HeadMeasurement) -> dict[str, Any]:
    """One row of ``measurements.csv``: the prompt and its box, the mask area, the ellipse and HC/BPD/OFD in
    pixels and mm (nan without a fit or a pixel size)."""
    row: dict[str, Any] = {"name": item.name, "file": item.path.name, "prompt": head.prompt}
    row |= dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), (float(v) for v in head.box), strict=True))
    row["mask_area_px"] = int(head.mask.sum())
    row["status"] = head.status
    px = head.biometry_px()
    row |= {f"{k}_px": v for k, v in px.items()}
    row["angle_deg"] = head.ellipse.angle_deg if head.ellipse is not None else math.nan
    row["pixel_size_mm"] = head.pixel_size_mm
    row |= {f"{k}_mm": v * head.pixel_size_mm for k, v in px.items()}
    return row


def submission_name(name: str, file: str) -> str:
    """HC18's ``filename`` of a row: the image file's name, or for a frame of a multi-frame file
    ``<name><suffix>`` (``cine_f003.dcm``), so no two rows of a submission share one."""
    return file if Path(file).stem == name else f"{name}{Path(file).suffix}"


def submission(rows: pd.DataFrame) -> pd.DataFrame:
    """The HC18 challenge submission (:data:`SUBMISSION_COLUMNS`) from ``measurements.csv`` rows that have mm
    figures (an ellipse and a pixel size): HC18's evaluator refuses empty fields, so the others are left out (and
    counted in ``summary.json`` as ``n_not_submitted``)."""
    rows = rows[rows["semi_major_mm"].notna()]
    return pd.DataFrame(
        {
            "filename": [submission_name(n, f) for n, f in zip(rows["name"], rows["file"], strict=True)],
            "center_x_mm": rows["center_x_mm"],
            "center_y_mm": rows["center_y_mm"],
            "semi_axes_a_mm": rows["semi_major_mm"],
            "semi_axes_b_mm": rows["semi_minor_mm"],
            "angle_rad": np.radians(rows["angle_deg"]),
        }
    )


def hc_label(head: HeadMeasurement) -> str:
    """What an overlay says of the head: ``HC 247.1 mm``, ``HC 1205 px`` without a pixel size, or ``no ellipse``."""
    if head.ellipse is None:
        return "no ellipse"
    if math.isnan(head.pixel_size_mm):
        return f"HC {head.biometry_px()['hc']:.0f} px"
    return f"HC {head.hc_mm:.1f} mm"


def draw_overlay(
    image: np.ndarray, mask: np.ndarray, ellipse: Ellipse | None, box: np.ndarray, label: str = ""
) -> np.ndarray:
    """RGB uint8 overlay: the image, the mask outline (red), the fitted ellipse (green), the box (yellow) and
    ``label`` (the HC) in its top-left corner."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    thick = max(1, round(max(image.shape) / 400))
    if label:
        scale = max(0.4, max(image.shape) / 1600)
        origin = (4 * thick, round(24 * scale) + 4 * thick)
        cv2.putText(out, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3 * thick, cv2.LINE_AA)
        cv2.putText(out, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), thick)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 0, 0), thick)
    if ellipse is not None:
        centre = (ellipse.cx, ellipse.cy)
        axes = (2 * ellipse.semi_major, 2 * ellipse.semi_minor)
        cv2.ellipse(out, (centre, axes, ellipse.angle_deg), (0, 255, 0), thick)
    return out


def predict_images(
    segmenter: Segmenter,
    items: Sequence[ImageFile],
    out: Path,
    boxes: Mapping[str, Sequence[float]] | None = None,
    batch_size: int = 8,
    on_bad: str = "raise",
    progress: bool = True,
    journal: Path | None = None,
) -> tuple[pd.DataFrame, list[DataError]]:
    """Segment and measure ``items`` (the module doc); images with a row in ``boxes`` use that box (image
    pixels), the others the automatic prompt. Returns the measurement rows and the skipped bad images.
    ``journal``: each image's row is appended there (durably) once its files are written: what a resume skips."""
    check_on_bad(on_bad)
    boxes = boxes or {}
    for sub in ("masks", "ellipses", "overlays"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[DataError] = []
    with progress_bar(len(items), "predict", "img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk, images = [], []
            for item in items[start : start + batch_size]:
                with bad_input(on_bad, skipped):
                    image = item.load()
                    try:  # what the segmenter would refuse mid-batch, refused here per image
                        check_input(image, boxes.get(item.name), item.name)
                    except ValueError as err:
                        raise DataError(item.path, str(err).removeprefix(f"{item.name}: ")) from err
                    images.append(image)
                    chunk.append(item)
            if chunk:
                heads = segmenter.predict(
                    images,
                    [boxes.get(item.name) for item in chunk],
                    [item.pixel_size_mm for item in chunk],
                    names=[str(item.path) for item in chunk],
                )
                for item, image, head in zip(chunk, images, heads, strict=True):
                    write_png(out / "masks" / f"{item.name}.png", head.mask.astype(np.uint8) * 255)
                    ellipse = fitted_ellipse_mask(head.mask)  # the shape the HC is measured on
                    write_png(out / "ellipses" / f"{item.name}.png", ellipse.astype(np.uint8) * 255)
                    overlay = draw_overlay(image, head.mask, head.ellipse, head.box, hc_label(head))
                    write_png(out / "overlays" / f"{item.name}.png", overlay)
                    rows.append(measurement_row(item, head))
                    if journal is not None:
                        append_line(journal, json.dumps(json_safe(rows[-1]), allow_nan=False))
            bar.update(len(items[start : start + batch_size]))
    return pd.DataFrame(rows), skipped
