"""The ``fetalgen-sample`` task: a synthetic set written, judged and sealed, in that order.

1. write (:mod:`fetalgen.synthesis.writer`): pairs sampled into the folder, resumable, one manifest line each;
2. judge (:mod:`fetalgen.synthesis.judge`): agreement, realism, diversity, nearest neighbours, with the image
   features built by Hydra from ``fidelity.features`` (a ``_target_`` config) and passed in;
3. verdict (:func:`fetalgen.data.verdict.qc_verdict`): the one rule that sets each pair's ``qc_pass``;
4. seal: ``provenance.json`` (the generator, its training cases, the manifest's hash), written last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fetalgen.data.cases import Case, DataError
from fetalgen.data.dataset import PairDataset
from fetalgen.data.provenance import (
    LeakageError,
    case_records,
    find_overlap,
    record_case,
    write_synthetic_provenance,
)
from fetalgen.diffusion.checkpoint import load_generator
from fetalgen.diffusion.sampling import is_mask_conditioned
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.synthesis.writer import SynthesisSpec, TrainReference, summarise_dataset, write_synthetic
from fetalgen.tasks.common import instantiate_loggers, log_final_metrics, task_wrapper
from fetalgen.utils.device import resolve_device

if TYPE_CHECKING:
    from fetalgen.synthesis.judge import RealPairs

log = logging.getLogger(__name__)


def train_reference(cfg: DictConfig, meta: dict[str, Any], size: int) -> TrainReference:
    """Training images for the memorisation check: ``cfg.memorisation.train_dir`` (a folder with ``images/``
    and ``masks/``) or the training cases recorded in the checkpoint (its provenance)."""
    mem = cfg.memorisation
    if not mem.enabled:
        log.warning("memorisation check switched off (memorisation.enabled=false)")
        return TrainReference.empty(size)
    if mem.get("train_dir"):
        from fetalgen.data.folder import read_folder

        cases = read_folder(mem.train_dir)
    elif meta.get("training_cases"):
        cases = [record_case(r) for r in meta["training_cases"]]
    else:
        raise DataError(
            meta["path"], "checkpoint lists no training cases (older fetalgen); set memorisation.train_dir"
        )
    return TrainReference.from_dataset(PairDataset(cases, size))


@dataclass(frozen=True)
class LoadedPairs:
    """Real pairs read through an ``eval_data`` config: their arrays, cases and a description."""

    pairs: RealPairs
    cases: list[Case]
    where: str


def load_real_pairs(spec: DictConfig | None, size: int) -> LoadedPairs | None:
    """The pairs an ``eval_data`` config names (``fidelity.heldout``, ``fidelity.reference``) at ``size``."""
    if not spec:
        return None
    from fetalgen.synthesis.judge import RealPairs  # noqa: F811 (the runtime import of the annotation's class)
    from fetalgen.tasks.build import load_eval_set

    data = load_eval_set(spec, size)
    pairs = RealPairs(
        np.stack([np.asarray(i, np.float32) / 255.0 for i in data.dataset.images]),
        np.stack([np.asarray(m) > 0 for m in data.dataset.masks]),
    )
    list_file = (spec.get("source") or {}).get("list_file")
    where = f"({data.name}{', ' + str(list_file) if list_file else ''})"
    return LoadedPairs(pairs, data.cases, where)


def build_judge(
    cfg: DictConfig, reference: TrainReference, size: int, device: torch.device
) -> Callable[[Path], dict[str, Any]] | None:
    """The fidelity judge of ``cfg.fidelity`` (None when switched off or without training pairs to judge by)."""
    from fetalgen.synthesis.judge import JudgeSettings, RealPairs, judge_synthetic

    fid = cfg.get("fidelity")
    if not fid or not fid.enabled:
        log.warning("fidelity figures switched off (fidelity.enabled=false)")
        return None
    if len(reference.images) < 2:
        log.warning("fidelity figures need the generator's training pairs (memorisation.enabled): skipped")
        return None
    features = hydra.utils.instantiate(fid.features, device=str(device))  # a _target_ config: no import here
    heldout = load_real_pairs(fid.get("heldout"), size)
    reference_pairs = load_real_pairs(fid.get("reference"), size)
    if reference_pairs is not None:
        if heldout is None:
            raise ValueError("fidelity.reference (the measurement segmenter's pairs) needs fidelity.heldout: the "
                             "real pairs its ceiling is measured on")  # fmt: skip
        overlap = find_overlap(case_records(reference_pairs.cases), heldout.cases)
        if overlap:
            raise LeakageError(f"fidelity.reference shares {len(overlap)} image(s) or subject(s) with "
                               f"fidelity.heldout (the ceiling would be measured on training pairs): "
                               f"{', '.join(overlap[:10])}")  # fmt: skip
    settings = JudgeSettings(
        kid_subset_size=int(fid.kid_subset_size),
        kid_subsets=int(fid.kid_subsets),
        diversity_pairs=int(fid.diversity_pairs),
        gallery=int(fid.gallery),
        segmenter_steps=int(fid.segmenter_steps),
        min_agreement=fid.get("min_agreement"),
        seed=int(cfg.seed),
        progress=bool(cfg.get("progress", True)),
    )
    train = RealPairs(reference.images, reference.masks)
    box_judge = hydra.utils.instantiate(fid.box_judge, device=str(device)) if fid.get("box_judge") else None

    def judge(root: Path) -> dict[str, Any]:
        return judge_synthetic(
            root, train, reference.names, reference.subjects, features, settings,
            heldout=None if heldout is None else heldout.pairs,
            reference=None if reference_pairs is None else reference_pairs.pairs,
            reference_source=None if reference_pairs is None else reference_pairs.where, box_judge=box_judge,
        )  # fmt: skip

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
    conditioned = is_mask_conditioned(unet)
    mode = cfg.mode or ("mask_conditioned" if conditioned else "joint")  # null: the generator's own
    if conditioned and mode != "mask_conditioned":
        raise ValueError(f"{cfg.ckpt_path} is a mask-conditioned generator: it draws images for given masks; "
                         "sample with mode=mask_conditioned (or leave mode unset)")  # fmt: skip
    spec = SynthesisSpec(
        sampler=cfg.sampler,
        steps=cfg.steps,
        seed=int(cfg.seed),
        mode=mode,
        class_label=cfg.class_label,
        guidance_scale=float(cfg.guidance_scale),
        batch_size=int(cfg.batch_size),
        mask_threshold=float(cfg.mask_threshold),
        shape_prior=shape_prior(cfg, meta, reference) if mode == "mask_conditioned" else None,
    )
    judge = build_judge(
        cfg, reference, size, device
    )  # before sampling: a missing feature checkpoint fails now
    root = Path(cfg.out)
    threshold = float(cfg.memorisation.threshold)
    settings = write_synthetic(
        cfg.out,
        int(cfg.n),
        unet,
        scheduler_config,
        meta["sha256"],
        spec,
        num_classes=meta["num_classes"],
        reference=reference,
        similarity_threshold=threshold,
        similarity_size=int(cfg.memorisation.size),
        qc=OmegaConf.to_container(cfg.qc, resolve=True),
        progress=bool(cfg.progress),
    )
    fidelity = judge(root) if judge is not None else None
    summary = summarise_dataset(root, reference, threshold, settings, fidelity)
    # Last: the set is complete and judged, and the resume check passed (a refused run changes nothing).
    generator = {"checkpoint": meta["path"], "sha256": meta["sha256"], "global_step": meta["global_step"]}
    if meta.get("training_cases") is None:
        log.warning("%s lists no training cases: the synthetic set gets no provenance", cfg.ckpt_path)
    else:
        write_synthetic_provenance(cfg.out, generator, meta["training_cases"], shape_prior=spec.shape_prior)
    from fetalgen.metrics.fidelity import summary_row

    metrics = {
        "n": summary["n"],
        "qc_pass_rate": summary["qc_pass_rate"],
        "memorisation_rate": summary["memorisation"]["rate"],
        **(summary_row(summary["fidelity"]) if "fidelity" in summary else {}),
    }
    log_final_metrics(instantiate_loggers(cfg.get("logger")), metrics)  # the judge's figures on the dashboard
    return {**metrics, "out": str(Path(cfg.out).resolve())}
