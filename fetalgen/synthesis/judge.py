"""Judge a written synthetic set as the generative-augmentation field does (``fetalgen-sample``, the sampler bench).

Per pair, into ``manifest.jsonl``: ``pair_agreement`` (does the mask outline the head drawn in the image?, by a
segmenter fitted on the generator's own training pairs: the only labels a label-matched arm may filter by),
``feature_similarity`` and ``nearest_train`` (feature-space nearest training image, mirror included). For the set,
into ``summary.json["fidelity"]``: realism (KID, FID against the generator's training images and, when given,
held-out real images), diversity (mean pairwise MS-SSIM beside the real sets'), agreement with its ceiling and
floor, and the nearest-neighbour figures with a gallery PNG (``nearest_neighbours.png``). Set-level figures are over
the *kept* pairs (QC passed, not memorised): the ones fine-tuning uses.

Agreement is measured twice when a fixed ``reference`` set of real pairs is given: ``agreement`` by a segmenter
fitted on it (the measurement: the same larger set for every generator, so that a 5-pair generator is judged as
well as a 60-pair one; it never chooses pairs), and ``agreement_own`` by the segmenter of the generator's own
pairs (what the per-pair figures and ``min_agreement`` use). Without one, ``agreement`` is the own segmenter's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fetalgen.data.cases import DataError
from fetalgen.data.synthetic import MANIFEST, ManifestEntry, exclusion, read_manifest
from fetalgen.data.transforms import pad_resize
from fetalgen.data.verdict import AGREEMENT, qc_verdict
from fetalgen.metrics.agreement import boxed_agreement, calibrated_agreement
from fetalgen.metrics.fidelity import Features, diversity, kid_fid, nearest_neighbours, save_gallery
from fetalgen.synthesis.reference import ReferenceSegmenter
from fetalgen.utils.bars import progress_bar
from fetalgen.utils.files import atomic_write

log = logging.getLogger(__name__)

GALLERY = "nearest_neighbours.png"


@dataclass(frozen=True)
class RealPairs:
    """Real images ``[N, S, S]`` float in [0, 1] with bool masks, at the synthetic set's size."""

    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


FEW_FOR_REALISM = 20  # kept pairs below which KID/FID get a warning in the summary


@dataclass(frozen=True)
class JudgeSettings:
    """How a set is judged (``fidelity.*`` of ``conf/sample.yaml``)."""

    kid_subset_size: int = 50
    kid_subsets: int = 100
    diversity_pairs: int = 500
    gallery: int = 8
    segmenter_steps: int = 300
    min_agreement: float | None = None  # a pair below it fails QC (reason ``agreement``)
    seed: int = 0
    progress: bool = True  # a bar over the segmenter's steps and the images embedded
    embed_chunk: int = 8  # images per features call (the bar moves once per call)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """``[N, S, S]`` float images -> ``[N, 1, S, S]`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]


def read_pairs(root: Path, entries: list[ManifestEntry], size: int) -> RealPairs:
    """The images and masks of ``entries`` (float [0, 1] and bool) at ``size`` px (padded and resized as the data
    layer does when they are not square at that size), read from ``root``."""
    images, masks = (
        np.zeros((len(entries), size, size), np.float32),
        np.zeros((len(entries), size, size), bool),
    )
    for k, e in enumerate(entries):
        image = cv2.imread(str(root / e.image), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(root / e.mask), cv2.IMREAD_GRAYSCALE)
        for array, path in ((image, root / e.image), (mask, root / e.mask)):
            if array is None:
                raise DataError(path, f"listed in the manifest (index {e.index}) but unreadable")
        if image.shape != mask.shape:
            raise DataError(root / e.mask, f"mask {mask.shape} and image {image.shape} differ in size")
        image, mask = (
            pad_resize(image, mask > 127, size)[:2] if image.shape != (size, size) else (image, mask > 127)
        )
        images[k], masks[k] = image.astype(np.float32) / 255.0, mask
    return RealPairs(images, masks)


def ceiling_split(subjects: list[str], seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training pairs to fit the segmenter on, and of those held out for its ceiling (whole
    subjects, drawn by ``seed``, until a fifth of the pairs, at least one, is held out); used when no held-out
    real pairs are given."""
    names = sorted(set(subjects))
    if len(names) < 2:
        raise ValueError("an agreement ceiling from the training pairs needs at least 2 subjects")
    target, held = max(1, len(subjects) // 5), set()
    for k in np.random.default_rng(seed).permutation(len(names)):
        if sum(s in held for s in subjects) >= target:
            break
        held.add(names[k])
    return [i for i, s in enumerate(subjects) if s not in held], [
        i for i, s in enumerate(subjects) if s in held
    ]


def fit_segmenter(
    pairs: RealPairs, settings: JudgeSettings, on_step: Callable[[], None]
) -> tuple[ReferenceSegmenter, float]:
    """A reference segmenter fitted on real ``pairs`` (``settings.segmenter_steps``), and its final loss."""
    segmenter = ReferenceSegmenter(int(pairs.images.shape[-1]), seed=settings.seed)
    losses = segmenter.fit(
        as_tensor(pairs.images), as_tensor(pairs.masks), steps=settings.segmenter_steps, on_step=on_step
    )
    return segmenter, losses[-1]


def agreement_figures(
    segmenter: ReferenceSegmenter,
    synthetic: RealPairs,
    ceiling: RealPairs,
    kept: np.ndarray,
    seed: int,
    about: dict[str, Any],
) -> dict[str, Any]:
    """Agreement of the synthetic pairs by ``segmenter``, with ceiling, floor, the normalised figure
    ``(synthetic - floor) / (ceiling - floor)`` and ``about`` (where the segmenter and ceiling come from);
    ``per_pair`` too (not for the summary)."""
    figures = calibrated_agreement(
        segmenter.predict,
        as_tensor(synthetic.images),
        synthetic.masks,
        as_tensor(ceiling.images),
        ceiling.masks,
        seed,
        kept,
    )
    syn, floor, ceil = figures["synthetic"], figures["floor"], figures["ceiling"]
    normalised = None
    if None not in (syn, floor, ceil) and ceil > floor:
        normalised = (syn - floor) / (ceil - floor)
    return {**figures, "normalised": normalised, **about}


def public(figures: dict[str, Any]) -> dict[str, Any]:
    """Agreement figures for the summary (the per-pair array left out)."""
    return {k: v for k, v in figures.items() if k != "per_pair"}


def judge_synthetic(
    root: str | Path,
    train: RealPairs,
    train_names: list[str],
    train_subjects: list[str],
    features: Features,
    settings: JudgeSettings,
    heldout: RealPairs | None = None,
    reference: RealPairs | None = None,
    reference_source: str = "",
    box_judge: Callable[[torch.Tensor, np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Judge the set at ``root`` (module doc): update its manifest, write the gallery, return the figures.

    ``box_judge``: a box-prompted pretrained segmenter (:class:`~fetalgen.segmentation.box_judge.BoxJudge`); its
    agreement (ceiling: the held-out pairs, else the training pairs; floor: each image in another pair's box) is
    reported as ``agreement_pretrained``, beside the CNN segmenters' figures.

    ``reference``: the fixed real pairs of the measurement segmenter (with ``heldout``, whose pairs give the
    ceiling; the caller makes sure the two share no image), named by ``reference_source``.
    """
    root = Path(root)
    entries = sorted(read_manifest(root), key=lambda e: e.index)
    if len(train) < 2 or not entries:
        raise ValueError(f"judging {root} needs at least 2 training pairs and 1 synthetic pair")
    size = int(train.images.shape[-1])
    pairs = read_pairs(root, entries, size)
    n_held = len(heldout) if heldout is not None and len(heldout) >= 2 else 0
    if reference is not None and (heldout is None or not len(heldout)):
        raise ValueError(
            "a measurement reference set needs held-out real pairs for its ceiling (fidelity.heldout)"
        )
    segmenters = 1 if reference is None else 2
    bar = progress_bar(segmenters * settings.segmenter_steps + 2 * len(pairs) + len(train) + n_held, "judge",
                       "step|img", disable=not settings.progress)  # fmt: skip

    def embed(images: np.ndarray) -> torch.Tensor:
        out = []
        for k in range(0, len(images), settings.embed_chunk):
            out.append(features(as_tensor(images[k : k + settings.embed_chunk])))
            bar.update(len(out[-1]))
        return torch.cat(out)

    # Agreement: segmenters fitted on real pairs only; the generator's own for the per-pair figures.
    if heldout is not None and len(heldout):
        fit, ceiling, ceiling_source = list(range(len(train))), heldout, "held-out real pairs"
    else:
        fit, held = ceiling_split(train_subjects, settings.seed)
        ceiling = RealPairs(train.images[held], train.masks[held])
        ceiling_source = f"{len(held)} training pair(s) held out from the segmenter (no held-out set given)"
    # The mask checks' own verdict (``qc["passed"]``): a re-judged set recomputes its agreement verdicts.
    mask_passed = [bool(e.qc.get("passed", e.qc_pass)) for e in entries]
    kept = np.array([ok and not e.memorised for ok, e in zip(mask_passed, entries, strict=True)])
    bar.set_postfix_str("reference segmenter (own pairs)")
    own, own_loss = fit_segmenter(
        RealPairs(train.images[fit], train.masks[fit]), settings, lambda: bar.update(1)
    )
    agreement = agreement_figures(own, pairs, ceiling, kept, settings.seed, {
        "ceiling_source": ceiling_source,
        "segmenter": f"prompt-free CNN, {settings.segmenter_steps} steps on the generator's {len(fit)} real "
                     f"training pairs (final loss {own_loss:.3f})"})  # fmt: skip
    measured = None
    if reference is not None:
        bar.set_postfix_str("reference segmenter (measurement)")
        fixed, fixed_loss = fit_segmenter(reference, settings, lambda: bar.update(1))
        measured = agreement_figures(fixed, pairs, ceiling, kept, settings.seed, {
            "ceiling_source": ceiling_source,
            "segmenter": f"prompt-free CNN, {settings.segmenter_steps} steps on {len(reference)} fixed real pairs "
                         f"{reference_source} (final loss {fixed_loss:.3f})"})  # fmt: skip

    pretrained = None
    if box_judge is not None:
        bar.set_postfix_str("box judge (pretrained)")
        real = heldout if heldout is not None and len(heldout) else train
        pretrained = boxed_agreement(box_judge, as_tensor(pairs.images[kept]), pairs.masks[kept],
                                     as_tensor(real.images), real.masks, settings.seed)  # fmt: skip
        pretrained = {**public(pretrained), "segmenter": box_judge.name,
                      "ceiling_source": "held-out real pairs" if real is heldout else "the generator's training pairs"}  # fmt: skip

    # Features: synthetic (and mirrored), training, held-out.
    bar.set_postfix_str(f"features ({features.name})")
    syn_feats = embed(pairs.images)
    syn_mirror = embed(pairs.images[:, :, ::-1])
    train_feats = embed(train.images)
    similarity, nearest = nearest_neighbours(syn_feats, syn_mirror, train_feats)

    for e, ok, agree, sim, near in zip(
        entries, mask_passed, agreement["per_pair"], similarity, nearest, strict=True
    ):
        e.pair_agreement, e.feature_similarity, e.nearest_train = (
            float(agree),
            float(sim),
            train_names[int(near)],
        )
        e.qc_pass, reasons = qc_verdict(ok, e.qc.get("reasons", []), float(agree), settings.min_agreement)
        e.qc = {**e.qc, "passed": ok, "reasons": reasons}
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text("".join(e.to_json() + "\n" for e in entries)))

    kept = np.array([exclusion(e) is None for e in entries])  # now with the agreement verdict
    if kept.sum() < 2:
        log.warning("%s: %d kept pair(s): realism and diversity need 2", root, int(kept.sum()))
    realism: dict[str, Any] = {}
    realism_note = None
    if 2 <= kept.sum() < FEW_FOR_REALISM:
        realism_note = (f"KID/FID from {int(kept.sum())} kept pairs: too few to read (the estimators need tens "
                        "to hundreds of images); compare sets of equal size only")  # fmt: skip
        log.warning("%s: %s", root, realism_note)
    if kept.sum() >= 2:
        realism["train"] = kid_fid(
            train_feats, syn_feats[kept], settings.kid_subset_size, settings.kid_subsets, settings.seed
        )
        if n_held:
            held_feats = embed(heldout.images)
            realism["heldout"] = kid_fid(
                held_feats, syn_feats[kept], settings.kid_subset_size, settings.kid_subsets, settings.seed
            )
    spread = {"synthetic": diversity(as_tensor(pairs.images[kept]), settings.diversity_pairs, settings.seed),
              "train": diversity(as_tensor(train.images), settings.diversity_pairs, settings.seed)}  # fmt: skip
    if heldout is not None and len(heldout) >= 2:
        spread["heldout"] = diversity(as_tensor(heldout.images), settings.diversity_pairs, settings.seed)
    bar.close()
    gallery = save_gallery(
        pairs.images, train.images, similarity, nearest, [e.name for e in entries], root / GALLERY,
        k=settings.gallery, feature_name=features.name, train_names=train_names,
    )  # fmt: skip
    own_summary = {
        **public(agreement),
        "min_agreement": settings.min_agreement,
        "qc_failed": int(
            sum(1 for e in entries if any(r.startswith(AGREEMENT) for r in e.qc.get("reasons", [])))
        ),
    }
    return {
        "features": features.name,
        "over": f"{int(kept.sum())} kept pairs (QC passed, not memorised) of {len(entries)}",
        "realism": realism,
        "realism_note": realism_note,
        "diversity": spread,
        # the measurement (the fixed reference's segmenter when given), and the own-labels figures QC used
        "agreement": own_summary if measured is None else public(measured),
        "agreement_own": own_summary,
        "agreement_pretrained": pretrained,
        "nearest_neighbours": {
            "median_similarity": float(np.median(similarity)),
            "max_similarity": float(similarity.max()),
            "gallery": str(gallery),
        },
    }
