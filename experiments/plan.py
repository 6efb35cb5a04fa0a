"""The plan of a reproduction, before anything runs (``make reproduce-paper PRESET=paper DRY_RUN=1``): the runs, their
optimizer steps, the images the SAM encoder sees, and, with the figures of ``experiments/bench/gpu.py --out``, an
estimate of GPU-hours on that card.

The estimate is a sum of measured rates (training steps, sampling, encoder, decoder) times the work; it leaves out
data loading, validation overheads and start-up, so read it as a lower bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fetalgen.cli import CONFIG_DIR

TEST_SETS = {"spanish": 597, "african": 125}  # the paper's test lists


@dataclass
class Work:
    """One kind of work: how many units, of what, and the gpu.py row that times it."""

    what: str
    units: float
    unit: str
    row: str | None  # substring of the gpu.py row ``what`` whose rate times it
    precision: str = "bf16"


def experiment(name: str, task: str) -> Any:
    """The composed config of ``experiment=<name>/<task>`` (no job runs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = "finetune" if task == "finetune" else "train_diffusion"
        cfg = compose(config, overrides=[f"experiment={name}/{task}", "logger=none"])
    GlobalHydra.instance().clear()
    return cfg


def plan(preset: Any, num_real: list[int], seeds: list[int], arms: list[str], matched: list[int],
         matched_seeds: list[int], reference: bool, cohorts: list[str], test_sets: list[str],
         variants: list[str] = ("main",), zero_shot: bool = False, pseudo: list[tuple[int, str]] = (),
         pseudo_labelled: int = 0, matched_variants: int = 1) -> list[Work]:  # fmt: skip
    """The work of a reproduction: ``cohorts`` the training cohorts, ``test_sets`` the extra test sets present
    (:data:`TEST_SETS`), ``variants`` the generator recipes compared (the first the main one: the others get the
    paper arm at the smallest N_real), ``zero_shot`` whether the pretrained model is evaluated as it comes (one run
    per seed, no training step), ``pseudo`` the self-training runs ``(N_real, arm)`` and ``pseudo_labelled`` the pool
    images their teachers label, ``matched_variants`` the label-matched arm's generator recipes; the other
    arguments as ``reproduce_paper.main`` settles them."""
    diffusion, finetune = (
        experiment(preset.experiment, "diffusion"),
        experiment(preset.experiment, "finetune"),
    )
    others = len(variants) - 1
    generators = 1 + len(matched) * len(matched_seeds) * matched_variants + others
    unet = str(diffusion.model.unet.get("sample_size", diffusion.model.get("image_size")))
    steps = int(finetune.trainer.max_steps)
    runs: list[tuple[int, str]] = [(n, arm) for _ in cohorts for n in num_real for arm in arms for _ in seeds]
    runs += [(min(num_real), "synthetic") for _ in range(others) for _ in seeds]
    matched_arms = list(getattr(preset, "matched_arms", ("matched",)))
    runs += [(n, arm) for n in matched for arm in matched_arms for _ in matched_seeds] * matched_variants
    if reference:
        runs += [(int(diffusion.data.num_real), "reference")] * len(seeds)
    runs += list(pseudo)
    views = int(finetune.data.get("augment_views") or 1)
    encoded = 0
    for n, arm in runs:
        synthetic = (
            preset.n_synthetic if arm in ("synthetic", "matched", "filtered", "synthetic_pseudo") else 0
        )  # every pair that passed QC, at most (and every kept pseudo-label, counted with the teachers below)
        augmented = views if arm in ("weak", "strong") else 1
        held_out = (
            int(finetune.data.num_val) + int(finetune.data.num_test) + sum(TEST_SETS[t] for t in test_sets)
        )
        encoded += (n + synthetic) * augmented + held_out
    held_out = int(finetune.data.num_val) + int(finetune.data.num_test) + sum(TEST_SETS[t] for t in test_sets)
    evaluated_only = len(seeds) if zero_shot else 0
    encoded += evaluated_only * held_out + pseudo_labelled
    decoder_batch = int(finetune.data.batch_size)
    return [
        Work(f"diffusion training ({generators} generators x {int(diffusion.trainer.max_steps)} steps, {unet} px)",
             generators * int(diffusion.trainer.max_steps), "steps", f"diffusion {preset.experiment}"),
        Work(f"sampling ({generators} x {preset.n_synthetic} pairs, {preset.sample_steps} steps)",
             generators * preset.n_synthetic * preset.sample_steps / 20, "pairs at 20 steps",
             f"sampling {preset.experiment}", "fp32"),
        Work(f"SAM fine-tuning ({len(runs)} runs x {steps} steps, batch {decoder_batch}"
             + (f"; + {evaluated_only} zero-shot evaluations)" if evaluated_only else ")"),
             len(runs) * steps * decoder_batch, "decoder images", "decoder train, batch 8, batched", "fp32"),
        Work("SAM encoder (each training view, validation and test image once per run)", encoded, "images",
             "encoder 1024 px"),
    ]  # fmt: skip


def gpu_hours(work: list[Work], figures: dict[str, Any] | None) -> tuple[list[float | None], str]:
    """Hours per line of ``work`` from gpu.py's rows (None where no row matches), and the card's name."""
    if not figures:
        return [None] * len(work), ""
    hours = []
    for w in work:
        rows = [r for r in figures["rows"] if w.row and w.row in r["what"] and r["precision"] == w.precision]
        hours.append(w.units / rows[0]["rate"] / 3600 if rows else None)
    return hours, figures.get("device", "?")


def format_plan(work: list[Work], figures_path: Path | None) -> str:
    figures = json.loads(figures_path.read_text()) if figures_path and figures_path.is_file() else None
    hours, card = gpu_hours(work, figures)
    lines = ["Plan (nothing runs with DRY_RUN=1):"]
    for w, h in zip(work, hours, strict=True):
        estimate = f"  ~{h:.2f} GPU-h" if h is not None else ""
        lines.append(f"  {w.what}: {w.units:,.0f} {w.unit}{estimate}")
    known = [h for h in hours if h is not None]
    if known:
        lines.append(f"  total: ~{sum(known):.1f} GPU-hours on {card} (measured rates x work: a lower bound)")
    else:
        where = figures_path or "experiments/bench/gpu.json"
        lines.append(
            f"  no GPU figures at {where}: run `python experiments/bench/gpu.py --out {where}` on the GPU"
        )
    return "\n".join(lines)
