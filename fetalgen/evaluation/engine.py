"""Evaluation of a box-prompted segmenter on any dataset the data layer reads, beside the box-ellipse baseline.

Per image and box repetition: Dice, IoU, HD95 and ASSD (pixels, and mm when the pixel size is known), and the
head-circumference error of the ellipse fitted to the predicted mask against the ground-truth mask's ellipse
(and against the dataset's reference HC when it has one). Everything is measured at the working resolution.
Methods: ``sam`` (the predicted mask), ``sam_ellipse`` (the same prediction read as its fitted ellipse: the
shape HC is measured on) and the ``box_ellipse`` baseline, scored on exactly the same boxes. Outputs, under
``<out_dir>/<name>/``: ``per_image.csv`` (one row per image x repetition x method), ``summary.json`` (mean and
std over repetitions of the per-repetition means) and ``cases.png`` (best, median and worst case by SAM Dice of
repetition 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fetalgen.data.sources import EvalSet
from fetalgen.evaluation.box_ellipse import box_ellipse_mask
from fetalgen.evaluation.cases import case_metrics, hc_px
from fetalgen.metrics.biometry import fitted_ellipse_mask
from fetalgen.metrics.surface import HD95_CONVENTION
from fetalgen.report.figures import save_case_figure
from fetalgen.segmentation.predictor import AUTO_ROUNDS
from fetalgen.segmentation.prompts import PROMPT_MODES, prompt_boxes
from fetalgen.utils.bars import progress_bar
from fetalgen.utils.files import write_json

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What evaluation needs of a segmenter (:class:`~fetalgen.segmentation.predictor.SamBoxPredictor`)."""

    def embed(self, images: torch.Tensor) -> Any:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> whatever :meth:`predict` and :meth:`auto` start from."""

    def predict(self, embedded: Any, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` XYXY in working pixels -> bool masks ``[R, B, S, S]``."""

    def auto(self, embedded: Any, rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """No prompt given: bool masks ``[B, S, S]`` and the boxes ``[B, 4]`` the predictor chose."""


SUMMARY_METRICS = (
    "dice", "iou", "hd95_px", "assd_px", "hd95_mm", "assd_mm", "hc_abs_err_px", "hc_abs_err_mm", "hc_err_mm",
    "hc_abs_err_csv_mm",
)  # fmt: skip
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
# Prompt-free results are the ones comparable with the HC18 literature: the best published fully automatic method
# on the HC18 test set (figures as quoted in fetalgen's issue 13; HC error against the reference HC, i.e. our
# ``hc_abs_err_csv_mm``). Shown beside ``auto`` and ``full`` results.
HC18_BEST_AUTOMATIC = {"dice": 0.9775, "hc_abs_err_csv_mm": 1.90}
# method in per_image.csv -> prefix of its metrics (``<prefix>/<label><metric>``) and its column in printed tables
METHODS = {
    "sam": ("", "SAM"),
    "sam_ellipse": ("ellipse_", "SAM ellipse"),
    "box_ellipse": ("baseline_", "box-ellipse"),
}


def evaluate_dataset(
    predictor: Predictor,
    dataset: Dataset,
    name: str = "eval",
    prompt_modes: Sequence[str] = ("jitter",),
    repetitions: int = 5,
    seed: int = 0,
    max_jitter_px: int = 20,
    ref_size: int = 256,
    batch_size: int = 8,
    progress: bool = True,
    auto_rounds: int = AUTO_ROUNDS,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Score ``predictor`` and the box-ellipse baseline on every image of ``dataset``, for each prompt mode.

    Each batch of images is encoded once; every mode decodes from those embeddings. ``jitter`` draws
    ``repetitions`` seeded boxes per image from the true mask; ``tight`` and ``full`` are deterministic (one
    repetition); ``auto`` asks the predictor for its own boxes (no ground truth involved). The baseline is scored
    on the very boxes the predictor got.

    Returns:
        One row per mode x image x repetition x method: ``dataset, name, index, repetition, method, prompt_mode,
        box_x0, box_y0, box_x1, box_y1, pixel_size_mm, hc_csv_mm`` and the :func:`case_metrics` columns; and per
        mode, the predicted bool mask of repetition 0 per case name (for the case figure).
    """
    for mode in prompt_modes:
        if mode not in PROMPT_MODES:
            raise ValueError(f"unknown prompt mode {mode!r}; choose from {', '.join(PROMPT_MODES)}")
    reps = {mode: repetitions if mode == "jitter" else 1 for mode in prompt_modes}
    rows: list[dict[str, Any]] = []
    first: dict[str, dict[str, np.ndarray]] = {mode: {} for mode in prompt_modes}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with progress_bar(len(dataset), f"evaluate {name}", "img", disable=not progress) as bar:
        for batch in loader:
            masks = batch["mask"][:, 0].numpy() > 0.5
            names = list(batch["name"])
            embedded = predictor.embed(batch["image"])
            true_hc = [hc_px(target) for target in masks]  # once per image, whatever the number of modes
            for mode in prompt_modes:
                if mode == "auto":
                    auto_masks, auto_boxes = predictor.auto(embedded, auto_rounds)
                    preds, boxes = auto_masks[None], auto_boxes[None]
                else:
                    per_image = [
                        prompt_boxes(m, n, mode, reps[mode], seed, max_jitter_px, ref_size)
                        for m, n in zip(masks, names, strict=True)
                    ]
                    boxes = np.stack(per_image, axis=1)  # [R, B, 4]
                    preds = np.asarray(predictor.predict(embedded, torch.from_numpy(boxes)), dtype=bool)
                for i, (target, case) in enumerate(zip(masks, names, strict=True)):
                    ps, hc_csv = float(batch["pixel_size_mm"][i]), float(batch["hc_mm"][i])
                    hc_true_px = true_hc[i]
                    first[mode][case] = preds[0, i]
                    for r in range(reps[mode]):
                        box = boxes[r, i]
                        base = {
                            "dataset": name,
                            "name": case,
                            "index": int(batch["index"][i]),
                            "repetition": r,
                            "prompt_mode": mode,
                            **dict(zip(BOX_COLUMNS, box.tolist(), strict=True)),
                            "pixel_size_mm": ps,
                            "hc_csv_mm": hc_csv,
                        }
                        for method, pred in (
                            ("sam", preds[r, i]),
                            ("sam_ellipse", fitted_ellipse_mask(preds[r, i])),
                            ("box_ellipse", box_ellipse_mask(box, target.shape)),
                        ):
                            rows.append(
                                {
                                    **base,
                                    "method": method,
                                    **case_metrics(pred, target, ps, hc_true_px, hc_csv),
                                }
                            )
            bar.update(len(names))
    return pd.DataFrame(rows), first


def mode_label(name: str, mode: str, primary: str) -> str:
    """The label of a set's results under one prompt mode: ``name`` for the primary mode, else ``name@mode``."""
    return name if mode == primary else f"{name}@{mode}"


def summarise(rows: pd.DataFrame, **info: Any) -> dict[str, Any]:
    """Per method and metric: mean and sample std (ddof=1, as over seeds; 0 for one repetition) over repetitions
    of the per-repetition image means.

    Images where a metric is nan (empty prediction, no ellipse fit, unknown pixel size) are left out of that
    metric's means; ``n_nan`` counts them over all repetitions.
    """
    summary: dict[str, Any] = {
        **info,
        "n_images": int(rows["name"].nunique()) if len(rows) else 0,
        "repetitions": int(rows["repetition"].nunique()) if len(rows) else 0,
        "methods": {},
    }
    for method, group in rows.groupby("method", sort=False):
        stats = {}
        for metric in SUMMARY_METRICS:
            per_rep = group.groupby("repetition")[metric].mean()
            stats[metric] = {
                "mean": _float(per_rep.mean()),
                "std": _float(per_rep.std(ddof=1)) if len(per_rep) > 1 else 0.0,
                "per_repetition": [_float(v) for v in per_rep],
                "n_nan": int(group[metric].isna().sum()),
            }
        summary["methods"][method] = stats
    return summary


def _float(value: Any) -> float | None:
    """A JSON-safe float (None for nan)."""
    value = float(value)
    return None if math.isnan(value) else value


def flat_metrics(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix}/<metric>``, ``{prefix}/<metric>_std`` for SAM, ``{prefix}/ellipse_<metric>`` for its mask read
    as the fitted ellipse and ``{prefix}/baseline_<metric>`` for the box-ellipse baseline (nan where undefined),
    plus ``{prefix}/n_images`` and ``{prefix}/[<label>]n_empty``: the empty predictions over all repetitions,
    which the surface distances leave out (their Dice counts 0)."""
    out: dict[str, float] = {f"{prefix}/n_images": float(summary["n_images"])}
    for method, (label, _) in METHODS.items():
        stats_of = summary["methods"].get(method, {})
        for metric, stats in stats_of.items():
            for key, suffix in (("mean", ""), ("std", "_std")):
                value = stats[key]
                out[f"{prefix}/{label}{metric}{suffix}"] = math.nan if value is None else value
        if "hd95_px" in stats_of:  # targets are never empty, so a nan distance is an empty prediction
            out[f"{prefix}/{label}n_empty"] = float(stats_of["hd95_px"]["n_nan"])
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A printable table: one line per metric, SAM and its fitted ellipse beside the box-ellipse baseline
    (mean ± std)."""

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats or stats["mean"] is None:
            return "n/a"
        return f"{stats['mean']:.4f} ± {stats['std'] or 0.0:.4f}"

    methods = [(summary["methods"].get(m, {}), title) for m, (_, title) in METHODS.items()]
    head = (
        f"{summary.get('dataset', '')}: {summary['n_images']} images, prompt {summary.get('prompt_mode')}, "
        f"{summary['repetitions']} repetition(s)"
    )
    lines = [head, f"{'metric':<18} " + " ".join(f"{title:>20}" for _, title in methods)]
    lines += [
        f"{m:<18} " + " ".join(f"{cell(stats.get(m)):>20}" for stats, _ in methods) for m in SUMMARY_METRICS
    ]
    if summary.get("prompt_mode") in ("auto", "full"):
        best = HC18_BEST_AUTOMATIC
        lines.append(
            f"no human prompt; for scale only, not a comparison: the best published fully automatic HC18 method "
            f"reports Dice {best['dice']:.4f}, HC error {best['hc_abs_err_csv_mm']:.2f} mm on HC18's official test "
            "set at full resolution, while these figures come from this set at the working size"
        )
    return "\n".join(lines)


def run_evaluation(
    predictor: Predictor,
    dataset: Dataset,
    out_dir: str | Path,
    name: str,
    prompt_modes: Sequence[str] = ("jitter",),
    figure: bool = True,
    info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate under each prompt mode, then write ``<out_dir>/<label>/{per_image.csv, summary.json, cases.png}``
    per mode (label: :func:`mode_label`, the first mode being the primary one); returns the summaries by label.

    ``kwargs`` go to :func:`evaluate_dataset`; ``info`` (checkpoint, image size, ...) into every summary.
    """
    rows, first = evaluate_dataset(predictor, dataset, name=name, prompt_modes=prompt_modes, **kwargs)
    settings = {k: kwargs[k] for k in ("seed", "max_jitter_px", "ref_size") if k in kwargs}
    summaries: dict[str, dict[str, Any]] = {}
    for mode in prompt_modes:
        label = mode_label(name, mode, prompt_modes[0])
        folder = Path(out_dir) / label
        folder.mkdir(parents=True, exist_ok=True)
        mode_rows = rows[rows["prompt_mode"] == mode] if len(rows) else rows
        mode_rows.to_csv(folder / "per_image.csv", index=False)
        summary = summarise(
            mode_rows,
            dataset=label,
            prompt_mode=mode,
            hd95_convention=HD95_CONVENTION,
            **settings,
            **dict(info or {}),
        )
        write_json(folder / "summary.json", summary)
        if figure:
            save_case_figure(mode_rows, dataset, first[mode], folder / "cases.png")
        log.info("Evaluation of %s written to %s\n%s", label, folder, format_summary(summary))
        summaries[label] = summary
    return summaries


@dataclass(frozen=True)
class EvalSettings:
    """How a model is evaluated (``conf/eval/``, built by Hydra): the prompt modes, box-jitter repetitions and
    their seed, the batch of images encoded at once, the case figure and the progress bar. An unknown prompt mode
    is refused when built, before anything is trained or read."""

    prompt_mode: str | None = None  # None: the model's eval prompt
    more_prompt_modes: Sequence[str] = ("tight", "full", "auto")
    auto_rounds: int = AUTO_ROUNDS
    repetitions: int = 5
    seed: int = 0
    batch_size: int = 8
    figure: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for mode in [*([self.prompt_mode] if self.prompt_mode else []), *self.more_prompt_modes]:
            if mode not in PROMPT_MODES:
                raise ValueError(
                    f"eval prompt mode {mode!r} is unknown; choose from {', '.join(PROMPT_MODES)}"
                )

    def prompt_modes(self, model_prompt: str) -> list[str]:
        """``[prompt_mode (None: the model's eval prompt), *more_prompt_modes]`` without repeats."""
        return list(dict.fromkeys([self.prompt_mode or model_prompt, *self.more_prompt_modes]))

    def for_model(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :func:`run_evaluation`, with the model's prompt settings (``eval_prompt``,
        ``max_jitter_px``, ``jitter_ref_size``)."""
        return {
            "prompt_modes": self.prompt_modes(hparams["eval_prompt"]),
            "figure": bool(self.figure),
            "repetitions": int(self.repetitions),
            "seed": int(self.seed),
            "max_jitter_px": int(hparams["max_jitter_px"]),
            "ref_size": int(hparams["jitter_ref_size"]),
            "batch_size": int(self.batch_size),
            "progress": bool(self.progress),
            "auto_rounds": int(self.auto_rounds),
        }


def evaluate_sets(
    predictor: Predictor,
    sets: Sequence[EvalSet],
    out_dir: str | Path,
    prefix: str,
    settings: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """:func:`run_evaluation` of each set (outputs under ``<out_dir>/<label>/``); returns the flat metrics
    ``<prefix>/<label>/...`` of them all (:func:`flat_metrics`)."""
    if not sets:
        log.info("no set to evaluate")
    metrics: dict[str, float] = {}
    for test in sets:
        where = {"root": test.where, "image_size": test.dataset.image_size, "skipped": test.skipped}
        summaries = run_evaluation(
            predictor, test.dataset, out_dir, test.name, info={**dict(info or {}), **where}, **settings
        )
        for label, summary in summaries.items():
            metrics |= flat_metrics(summary, f"{prefix}/{label}")
    return metrics
