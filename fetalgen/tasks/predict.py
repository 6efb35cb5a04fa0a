"""The ``fetalgen-predict`` task: segment a folder of images and measure the head (:mod:`fetalgen.segmentation.outputs`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from fetalgen.data.images import ImageFolder
from fetalgen.data.io import warn_skipped
from fetalgen.segmentation.outputs import (
    JOURNAL,
    MEASUREMENTS,
    SETTINGS,
    SUBMISSION,
    SUBMISSION_COLUMNS,
    predict_images,
    read_journal,
    submission,
)
from fetalgen.segmentation.segmenter import Segmenter, segmenter_for
from fetalgen.tasks.build import load_module
from fetalgen.tasks.common import build, output_dir, task_wrapper
from fetalgen.utils.files import claim_folder, sha256_file, write_json

log = logging.getLogger(__name__)


def build_segmenter(cfg: DictConfig) -> Segmenter:
    """The segmenter of ``cfg.backend``: ``torch`` (a checkpoint or raw weights) or ``onnxruntime`` (an export)."""
    if cfg.get("backend", "torch") == "onnxruntime":
        if not cfg.get("onnx_dir"):
            raise ValueError("backend=onnxruntime needs onnx_dir=<a fetalgen-export format=onnx folder>")
        if cfg.get("image_size") not in (None, ""):
            raise ValueError(
                "image_size: an ONNX export has its own working size (predictor.json); leave it unset"
            )
        from fetalgen.segmentation.onnx_predictor import load_onnx_segmenter

        return load_onnx_segmenter(cfg.onnx_dir, cfg.auto_rounds)
    if cfg.get("backend", "torch") != "torch":
        raise ValueError(f"backend={cfg.backend}: torch or onnxruntime")
    loaded = load_module(cfg.get("model"), cfg.get("ckpt_path"), cfg.allow_random_weights)
    return segmenter_for(loaded, cfg.get("image_size"), cfg.get("device"), cfg.auto_rounds)


def input_hashes(cfg: DictConfig, folder: ImageFolder) -> dict[str, str]:
    """The sha256 of the model files and CSVs a prediction reads: a resume across a replaced file is refused, where
    the paths alone would let one table mix two models."""
    onnx = Path(cfg.onnx_dir) if cfg.get("backend") == "onnxruntime" and cfg.get("onnx_dir") else None
    files = {"checkpoint": cfg.get("ckpt_path"), "pixel_sizes": folder.pixel_sizes,
             "boxes": folder.boxes, "onnx_encoder": onnx and onnx / "encoder.onnx",
             "onnx_decoder": onnx and onnx / "decoder.onnx", "onnx_settings": onnx and onnx / "predictor.json"}  # fmt: skip
    return {
        f"{key}_sha256": sha256_file(path) for key, path in files.items() if path and Path(path).is_file()
    }


def write_tables(out: Path, rows: pd.DataFrame, skipped: list[Any]) -> dict[str, Any]:
    """``measurements.csv`` (every image), the HC18 submission (those with mm figures) and ``skipped.txt``;
    returns their counts for the summary."""
    rows.to_csv(out / MEASUREMENTS, index=False)
    submitted = submission(rows) if len(rows) else pd.DataFrame(columns=SUBMISSION_COLUMNS)
    if len(rows):
        submitted.to_csv(out / SUBMISSION, index=False)
    if len(submitted) < len(rows):
        log.warning("%d image(s) have no mm figures (no ellipse fit or no pixel size): in %s, not in %s",
                    len(rows) - len(submitted), MEASUREMENTS, SUBMISSION)  # fmt: skip
    if skipped:
        (out / "skipped.txt").write_text("".join(f"{e}\n" for e in skipped))
    count = (lambda column, value: int((rows[column] == value).sum())) if len(rows) else (lambda *_: 0)
    return {
        "n_images": len(rows),
        "n_auto": count("prompt", "auto"),
        "n_box": count("prompt", "box"),
        "n_measured": count("status", "ok"),
        "n_without_pixel_size": int(rows["pixel_size_mm"].isna().sum()) if len(rows) else 0,
        "n_not_submitted": len(rows) - len(submitted),  # no mm figures: left out of hc18_submission.csv
        "n_skipped": len(skipped),
        "skipped": [str(e) for e in skipped],
    }


def recorded_settings(cfg: DictConfig, folder: ImageFolder, image_size: int) -> dict[str, Any]:
    """What a prediction folder was made with (``settings.json``): a resume with other settings is refused."""
    return {"checkpoint": str(cfg.get("ckpt_path") or ""), "model": str((cfg.get("model") or {}).get("sam")),
            "backend": str(cfg.get("backend", "torch")), "onnx_dir": str(cfg.get("onnx_dir") or ""),
            "images": str(Path(folder.root).resolve()), "pixel_sizes": str(folder.pixel_sizes),
            "boxes": str(folder.boxes), "image_size": image_size, "auto_rounds": cfg.auto_rounds,
            **input_hashes(cfg, folder)}  # fmt: skip


@task_wrapper
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run ``fetalgen-predict`` (``conf/predict.yaml``); returns the summary written to ``summary.json``."""
    out = Path(cfg.out) if cfg.get("out") else output_dir(cfg)
    folder: ImageFolder = build(cfg.images)
    segmenter = build_segmenter(cfg)
    settings = recorded_settings(cfg, folder, segmenter.image_size)
    items, boxes = folder.read()
    done = read_journal(out / JOURNAL) if claim_folder(out, settings, SETTINGS) else []
    if done:
        log.info("%s: resuming, %d image(s) done before", out, len(done))
    finished = {row["name"] for row in done}
    todo = [item for item in items if item.name not in finished]
    new, bad = predict_images(segmenter, todo, out, boxes, cfg.batch_size, folder.on_bad, cfg.progress,
                              journal=out / JOURNAL)  # fmt: skip
    order = {item.name: k for k, item in enumerate(items)}
    rows = pd.concat([pd.DataFrame(done), new], ignore_index=True) if done else new
    if len(rows):
        rows = rows.sort_values("name", key=lambda names: names.map(order)).reset_index(drop=True)
    skipped = [*items.skipped, *bad]
    warn_skipped(bad, f"images in {folder.root}")
    summary = write_tables(out, rows, skipped) | {
        "checkpoint": settings["checkpoint"] or ("" if settings["backend"] == "onnxruntime" else "raw/random SAM"),
        "backend": settings["backend"], "onnx_dir": settings["onnx_dir"], "images": str(folder.root),
        "image_size": segmenter.image_size,
    }  # fmt: skip
    write_json(out / "summary.json", summary)
    log.info(
        "%d image(s) segmented (%d measured, %d skipped) into %s",
        summary["n_images"], summary["n_measured"], summary["n_skipped"], out,
    )  # fmt: skip
    return summary
