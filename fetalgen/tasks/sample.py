"""The ``fetalgen-sample`` task: a synthetic set written, judged and sealed, in that order.

1. write (:mod:`fetalgen.synthesis.writer`): pairs sampled into the folder, resumable, one manifest line each;
2. judge (:mod:`fetalgen.synthesis.judge`): agreement, realism, diversity, nearest neighbours, with the image
   features built by Hydra from ``fidelity.features`` (a ``_target_`` config) and passed in;
3. verdict (:func:`fetalgen.data.verdict.qc_verdict`): the one rule that sets each pair's ``qc_pass``;
4. seal: ``provenance.json`` (the generator, its training cases, the manifest's hash), written last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fetalgen.data.cases import DataError
from fetalgen.data.dataset import ImageDataset, PairDataset
from fetalgen.data.provenance import is_labelled, record_case, write_synthetic_provenance
from fetalgen.diffusion.checkpoint import load_generator
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.metrics.fidelity import summary_row
from fetalgen.synthesis.judge import Judge, RealPairs
from fetalgen.synthesis.writer import (
    LoadedGenerator,
    PairChecks,
    SynthesisSpec,
    TrainReference,
    summarise_dataset,
    write_synthetic,
)
from fetalgen.tasks.common import build, instantiate_loggers, log_final_metrics, task_wrapper
from fetalgen.utils.device import resolve_device

log = logging.getLogger(__name__)


def train_reference(cfg: DictConfig, meta: dict[str, Any], size: int) -> TrainReference:
    """Training images for the memorisation check: ``cfg.memorisation.train_dir`` (a folder with ``images/``
    and ``masks/``) or the training cases recorded in the checkpoint (its provenance: the labelled pairs, and the
    images it saw without masks)."""
    mem = cfg.memorisation
    if not mem.enabled:
        log.warning("memorisation check switched off (memorisation.enabled=false)")
        return TrainReference.empty(size)
    if mem.get("train_dir"):
        from fetalgen.data.folder import read_folder

        cases = read_folder(mem.train_dir)
    elif meta.get("training_cases"):
        records = meta["training_cases"]
        cases = [record_case(r) for r in records if is_labelled(r)]
        unlabelled = [record_case(r) for r in records if not is_labelled(r)]
        return TrainReference.from_dataset(PairDataset(cases, size), ImageDataset(unlabelled, size))
    else:
        raise DataError(
            meta["path"], "checkpoint lists no training cases (older fetalgen); set memorisation.train_dir"
        )
    return TrainReference.from_dataset(PairDataset(cases, size))


def configured_judge(
    cfg: DictConfig, reference: TrainReference, size: int, device: torch.device
) -> Judge | None:
    """The :class:`~fetalgen.synthesis.judge.Judge` Hydra builds from ``cfg.fidelity`` on ``device``, its real pairs
    read at ``size`` (before sampling: a missing feature checkpoint or bad held-out file fails now); None when
    switched off or without the generator's training pairs to judge by."""
    if not cfg.fidelity.enabled:
        log.warning("fidelity figures switched off (fidelity.enabled=false)")
        return None
    if len(reference.images) < 2:
        log.warning("fidelity figures need the generator's training pairs (memorisation.enabled): skipped")
        return None
    on_device = {key: {"device": str(device)} for key in ("features", "box_judge") if cfg.fidelity.get(key)}
    judge = build(cfg.fidelity, **on_device)
    judge.prepare(size)
    return judge


def shape_prior(cfg: DictConfig, meta: dict[str, Any], reference: TrainReference) -> dict[str, Any]:
    """The head-shape prior mask_conditioned mode draws from: the one the checkpoint records, else one fitted to the
    generator's training masks (the memorisation reference)."""
    if meta.get("shape_prior"):
        return meta["shape_prior"]
    if reference.masks is None or len(reference.masks) < 2:
        raise DataError(meta["path"], "records no shape prior and lists no training masks to fit one to "
                                      "(mask_conditioned mode needs one; memorisation.enabled=true reads them)")  # fmt: skip
    log.info("fitting the head-shape prior to the %d training masks", len(reference.masks))
    return ShapePrior.fit(reference.masks).to_dict()


def check_sample_settings(cfg: DictConfig) -> None:
    """Refuse, before anything is loaded, sampling settings outside their range (``guidance_scale=nan`` drew blank
    images that all passed QC); the message names the setting."""

    def number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and value <= high
        if not ok:
            bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
            raise ValueError(f"{name}={value!r} is outside {bound}")

    if not isinstance(cfg.n, int) or isinstance(cfg.n, bool) or cfg.n < 1:
        raise ValueError(f"n={cfg.n!r}: the number of pairs to sample must be a whole number >= 1")
    number("guidance_scale", cfg.guidance_scale, 0.0, 100.0)
    number("mask_threshold", cfg.mask_threshold, -1.0, 1.0)
    number("memorisation.threshold", cfg.memorisation.threshold, -1.0, 1.0)
    number("qc.min_ellipse_iou", cfg.qc.min_ellipse_iou, 0.0, 1.0)
    number("qc.border_margin", cfg.qc.border_margin, 0.0, 0.5)
    low, high = cfg.qc.area_range
    number("qc.area_range[0]", low, 0.0, 1.0)
    number("qc.area_range[1]", high, low, 1.0, low_open=True)
    if cfg.fidelity.get("min_agreement") is not None:
        number("fidelity.min_agreement", cfg.fidelity.min_agreement, 0.0, 1.0)
    if cfg.get("steps") is not None and (not isinstance(cfg.steps, int) or cfg.steps < 1):
        raise ValueError(
            f"steps={cfg.steps!r}: sampler steps must be a whole number >= 1 (null: the sampler's default)"
        )


def synthesis_spec(cfg: DictConfig, meta: dict[str, Any], reference: TrainReference) -> SynthesisSpec:
    """The sampling settings of ``cfg`` for this generator: ``mode`` null is the generator's own (the builder key
    its checkpoint records), a mask-conditioned generator refuses any other, and that mode draws masks from the
    shape prior."""
    conditioned = meta["generator"] == "mask_conditioned"
    mode = cfg.mode or ("mask_conditioned" if conditioned else "joint")
    if conditioned and mode != "mask_conditioned":
        raise ValueError(f"{cfg.ckpt_path} is a mask-conditioned generator: it draws images for given masks; "
                         "sample with mode=mask_conditioned (or leave mode unset)")  # fmt: skip
    return SynthesisSpec(
        sampler=cfg.sampler, steps=cfg.steps, seed=int(cfg.seed), mode=mode, class_label=cfg.class_label,
        guidance_scale=float(cfg.guidance_scale), batch_size=int(cfg.batch_size),
        mask_threshold=float(cfg.mask_threshold),
        shape_prior=shape_prior(cfg, meta, reference) if mode == "mask_conditioned" else None,
    )  # fmt: skip


def seal(root: Path, meta: dict[str, Any], spec: SynthesisSpec) -> None:
    """``provenance.json``: the generator, its training cases and the manifest's hash (none for a checkpoint that
    lists no training cases: said)."""
    if meta.get("training_cases") is None:
        log.warning("%s lists no training cases: the synthetic set gets no provenance", meta["path"])
        return
    generator = {"checkpoint": meta["path"], "sha256": meta["sha256"], "global_step": meta["global_step"]}
    write_synthetic_provenance(root, generator, meta["training_cases"], shape_prior=spec.shape_prior)


@task_wrapper
def synthesize(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint; write ``cfg.n`` pairs into ``cfg.out``, judge them, summarise and seal (module doc).

    Returns:
        Flat metrics: ``qc_pass_rate``, ``memorisation_rate``, ``n`` and ``out``.
    """
    check_sample_settings(cfg)
    device = resolve_device(cfg.device)
    unet, scheduler_config, meta = load_generator(cfg.ckpt_path, device=device)
    size = int(unet.config.sample_size)
    reference = train_reference(cfg, meta, size)
    spec = synthesis_spec(cfg, meta, reference)
    judge = configured_judge(
        cfg, reference, size, device
    )  # before sampling: a missing feature checkpoint fails now
    root = Path(cfg.out)
    generator = LoadedGenerator(unet, scheduler_config, meta["sha256"], meta["num_classes"])
    checks = PairChecks(reference, float(cfg.memorisation.threshold), int(cfg.memorisation.size),
                        OmegaConf.to_container(cfg.qc, resolve=True))  # fmt: skip
    settings = write_synthetic(root, int(cfg.n), generator, spec, checks, progress=bool(cfg.progress))
    train = RealPairs(reference.images, reference.masks, reference.names, reference.subjects,
                      unlabelled=reference.unlabelled, unlabelled_names=reference.unlabelled_names)  # fmt: skip
    fidelity = judge(root, train) if judge is not None else None
    summary = summarise_dataset(root, reference, checks.similarity_threshold, settings, fidelity)
    seal(root, meta, spec)  # last: the set is complete and judged, and the resume check passed

    metrics = {
        "n": summary["n"],
        "qc_pass_rate": summary["qc_pass_rate"],
        "memorisation_rate": summary["memorisation"]["rate"],
        **(summary_row(summary["fidelity"]) if "fidelity" in summary else {}),
    }
    log_final_metrics(instantiate_loggers(cfg.get("logger")), metrics)  # the judge's figures on the dashboard
    return {**metrics, "out": str(Path(cfg.out).resolve())}
