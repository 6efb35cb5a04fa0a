"""The ``fetalgen-predict`` task: segment unlabelled images and measure the head (HC, BPD, OFD) in mm.

Per image, under ``<out>/``: ``masks/<name>.png`` (0/255, the image's own size), ``overlays/<name>.png`` (the
image, the mask's outline in red, the fitted ellipse in green, the prompt box in yellow), one row of
``measurements.csv``, and one row of ``hc18_submission.csv`` (HC18 challenge format). ``summary.json`` counts
what was done and skipped; ``skipped.txt`` lists skipped files.

Geometry: images are padded bottom/right to a square and resized to the working size (as in training), the
mask is predicted there, the ellipse fitted to it (:func:`~fetalgen.metrics.biometry.fit_ellipse`) and mapped
back to image pixels (``x_image = (x_working + 0.5) * scale - 0.5`` with ``scale = max(H, W) / size``, axes
times ``scale``). HC18 columns: centre and semi-axes in mm, ``semi_axes_a_mm`` the semi-axis along
``angle_rad`` (the major one), the angle measured from the image x axis towards y (rows down), in [0, pi).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from fetalgen.data.cases import DataError
from fetalgen.data.images import ImageFile, read_boxes, read_images
from fetalgen.data.io import check_on_bad, load_image, warn_skipped
from fetalgen.data.transforms import pad_resize
from fetalgen.metrics.biometry import Ellipse, ellipse_circumference, fit_ellipse
from fetalgen.segmentation.predictor import AUTO_ROUNDS, SamBoxPredictor, load_module
from fetalgen.utils.files import write_json, write_png
from fetalgen.utils.task import output_dir, resolve_device, task_wrapper

log = logging.getLogger(__name__)

MEASUREMENTS, SUBMISSION = "measurements.csv", "hc18_submission.csv"
SUBMISSION_COLUMNS = (
    "filename",
    "center_x_mm",
    "center_y_mm",
    "semi_axes_a_mm",
    "semi_axes_b_mm",
    "angle_rad",
)


@dataclass(frozen=True)
class Working:
    """An image brought to the working size: the square working image, its scale and the original shape."""

    image: np.ndarray  # uint8 S x S
    scale: float  # image pixels per working pixel
    shape: tuple[int, int]  # (H, W) of the image


def to_working(image: np.ndarray, size: int) -> Working:
    """Pad and resize ``image`` (uint8 HxW) as the data layer does for training (:func:`pad_resize`)."""
    working, _, scale = pad_resize(image, np.zeros(image.shape, bool), size)
    return Working(working, scale, image.shape[:2])


def logits_to_image(logits: np.ndarray, work: Working, threshold: float = 0.0) -> np.ndarray:
    """Working-size mask logits (or a 0/1 mask with ``threshold=0.5``) -> a bool mask of the image's own size:
    a linear resize of the square, thresholded, then the padding cropped (a smooth outline, not working pixels)."""
    side = round(work.scale * logits.shape[0])
    big = cv2.resize(logits.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR) > threshold
    h, w = work.shape
    return np.ascontiguousarray(big[:h, :w])


def ellipse_to_image(e: Ellipse, scale: float) -> Ellipse:
    """An ellipse fitted at working resolution, in image pixels (pixel centres map as ``(x + 0.5) * scale - 0.5``)."""
    return Ellipse(
        (e.cx + 0.5) * scale - 0.5,
        (e.cy + 0.5) * scale - 0.5,
        e.semi_major * scale,
        e.semi_minor * scale,
        e.angle_deg,
    )


def box_to_working(box: Sequence[float], scale: float, size: int) -> np.ndarray:
    """An XYXY box in image pixels -> working pixels, clipped to the working image."""
    return np.clip(np.asarray(box, np.float32) / scale, 0, size - 1).astype(np.float32)


def measurement_row(
    item: ImageFile, prompt: str, box_image: np.ndarray, mask: np.ndarray, ellipse: Ellipse | None
) -> dict[str, Any]:
    """One row of ``measurements.csv``: the prompt and its box, the mask area, the ellipse and HC/BPD/OFD in
    pixels and mm (nan without a fit or a pixel size)."""
    ps = item.pixel_size_mm
    row: dict[str, Any] = {"name": item.name, "file": item.path.name, "prompt": prompt}
    row |= dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), (float(v) for v in box_image), strict=True))
    row["mask_area_px"] = int(mask.sum())
    row["status"] = "ok" if ellipse is not None else ("no head found" if not mask.any() else "no ellipse fit")
    e = ellipse or Ellipse(math.nan, math.nan, math.nan, math.nan, math.nan)
    hc = ellipse_circumference(e.semi_major, e.semi_minor) if ellipse is not None else math.nan
    px = {
        "center_x": e.cx, "center_y": e.cy, "semi_major": e.semi_major, "semi_minor": e.semi_minor,
        "hc": hc, "bpd": 2 * e.semi_minor, "ofd": 2 * e.semi_major,
    }  # fmt: skip
    row |= {f"{k}_px": v for k, v in px.items()}
    row["angle_deg"] = e.angle_deg
    row["pixel_size_mm"] = ps
    row |= {f"{k}_mm": v * ps for k, v in px.items()}
    return row


def submission(rows: pd.DataFrame) -> pd.DataFrame:
    """The HC18 challenge submission (:data:`SUBMISSION_COLUMNS`) from ``measurements.csv`` rows."""
    return pd.DataFrame(
        {
            "filename": rows["file"],
            "center_x_mm": rows["center_x_mm"],
            "center_y_mm": rows["center_y_mm"],
            "semi_axes_a_mm": rows["semi_major_mm"],
            "semi_axes_b_mm": rows["semi_minor_mm"],
            "angle_rad": np.radians(rows["angle_deg"]),
        }
    )


def draw_overlay(image: np.ndarray, mask: np.ndarray, ellipse: Ellipse | None, box: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay: the image, the mask outline (red), the fitted ellipse (green), the box (yellow)."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    thick = max(1, round(max(image.shape) / 400))
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
    predictor: SamBoxPredictor,
    items: Sequence[ImageFile],
    out: Path,
    image_size: int,
    boxes: Mapping[str, Sequence[float]] | None = None,
    batch_size: int = 8,
    auto_rounds: int = AUTO_ROUNDS,
    on_bad: str = "raise",
    progress: bool = True,
) -> tuple[pd.DataFrame, list[DataError]]:
    """Segment and measure ``items`` (the module doc); images with a row in ``boxes`` use that box (image
    pixels), the others the automatic prompt. Returns the measurement rows and the skipped bad images."""
    check_on_bad(on_bad)
    boxes = boxes or {}
    for sub in ("masks", "overlays"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[DataError] = []
    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk, images, works = [], [], []
            for item in items[start : start + batch_size]:
                try:
                    image = load_image(item.path)
                except DataError as err:
                    if on_bad == "raise":
                        raise
                    skipped.append(err)
                    continue
                chunk.append(item)
                images.append(image)
                works.append(to_working(image, image_size))
            if chunk:
                rows += _predict_batch(predictor, chunk, images, works, out, image_size, boxes, auto_rounds)
            bar.update(len(items[start : start + batch_size]))
    return pd.DataFrame(rows), skipped


def _predict_batch(
    predictor: SamBoxPredictor,
    items: list[ImageFile],
    images: list[np.ndarray],
    works: list[Working],
    out: Path,
    size: int,
    boxes: Mapping[str, Sequence[float]],
    auto_rounds: int,
) -> list[dict[str, Any]]:
    tensor = torch.from_numpy(np.stack([w.image for w in works])).float().div(255.0)[:, None]
    embedded = predictor.embed(tensor)
    given = [i for i, item in enumerate(items) if item.name in boxes]
    automatic = [i for i in range(len(items)) if i not in given]
    working_boxes = np.zeros((len(items), 4), np.float32)
    if automatic:
        working_boxes[automatic] = predictor.auto_boxes(embedded.select(automatic), auto_rounds)
    if given:
        working_boxes[given] = [box_to_working(boxes[items[i].name], works[i].scale, size) for i in given]
    logits = predictor.logits(embedded, torch.from_numpy(working_boxes)[None])[0]
    threshold = predictor.threshold
    rows = []
    for i, (item, image, work) in enumerate(zip(items, images, works, strict=True)):
        fit = fit_ellipse(logits[i] > threshold)
        ellipse = ellipse_to_image(fit, work.scale) if fit is not None else None
        mask = logits_to_image(logits[i], work, threshold)
        box = np.asarray(boxes[item.name], np.float32) if i in given else working_boxes[i] * work.scale
        write_png(out / "masks" / f"{item.name}.png", mask.astype(np.uint8) * 255)
        write_png(out / "overlays" / f"{item.name}.png", draw_overlay(image, mask, ellipse, box))
        rows.append(measurement_row(item, "box" if i in given else "auto", box, mask, ellipse))
    return rows


@task_wrapper
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run ``fetalgen-predict`` (``conf/predict.yaml``); returns the summary written to ``summary.json``."""
    module, train_cfg, _ = load_module(cfg.get("model"), cfg.get("ckpt_path"))
    image_size = int(cfg.get("image_size") or (train_cfg or {}).get("data", {}).get("image_size") or 256)
    items = read_images(cfg.images.root, cfg.images.get("pixel_sizes"), on_bad=cfg.on_bad_image)
    boxes = read_boxes(cfg.images.boxes) if cfg.images.get("boxes") else {}
    unknown = sorted(set(boxes) - {item.name for item in items})
    if unknown:
        raise DataError(
            cfg.images.boxes, f"boxes for images not in {cfg.images.root}: {', '.join(unknown[:5])}"
        )
    out = output_dir(cfg)
    predictor = SamBoxPredictor(module, resolve_device(cfg.get("device")))
    rows, bad = predict_images(
        predictor,
        items,
        out,
        image_size,
        boxes,
        cfg.batch_size,
        cfg.auto_rounds,
        cfg.on_bad_image,
        cfg.progress,
    )
    skipped = [*items.skipped, *bad]
    warn_skipped(bad, f"images in {cfg.images.root}")
    rows.to_csv(out / MEASUREMENTS, index=False)
    if len(rows):
        submission(rows).to_csv(out / SUBMISSION, index=False)
    if skipped:
        (out / "skipped.txt").write_text("".join(f"{e}\n" for e in skipped))
    summary = {
        "checkpoint": str(cfg.get("ckpt_path") or "raw/random SAM"),
        "images": str(cfg.images.root),
        "image_size": image_size,
        "n_images": len(rows),
        "n_auto": int((rows["prompt"] == "auto").sum()) if len(rows) else 0,
        "n_box": int((rows["prompt"] == "box").sum()) if len(rows) else 0,
        "n_measured": int((rows["status"] == "ok").sum()) if len(rows) else 0,
        "n_without_pixel_size": int(rows["pixel_size_mm"].isna().sum()) if len(rows) else 0,
        "n_skipped": len(skipped),
        "skipped": [str(e) for e in skipped],
    }
    write_json(out / "summary.json", summary)
    log.info(
        "%d image(s) segmented (%d measured, %d skipped) into %s",
        summary["n_images"], summary["n_measured"], summary["n_skipped"], out,
    )  # fmt: skip
    return summary
