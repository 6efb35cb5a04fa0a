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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fetalgen.data.cases import Case, DataError
from fetalgen.data.dataset import PairDataset
from fetalgen.data.provenance import LeakageError, case_records, find_overlap
from fetalgen.data.sources import EvalSource
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
    """Real images ``[N, S, S]`` float in [0, 1] with bool masks, at the synthetic set's size; ``names`` and
    ``subjects`` per pair (the training pairs' for the nearest-neighbour record and the ceiling split), the
    ``cases`` they were read from (for the overlap check) and ``where`` (a description for the summary)."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    where: str = ""
    unlabelled: np.ndarray | None = None  # images seen without masks (a generator's unlabelled pool)
    unlabelled_names: list[str] = field(default_factory=list)

    @cached_property
    def seen(self) -> tuple[np.ndarray, list[str]]:
        """Every image a generator trained on, pairs first, and their names: the nearest-neighbour candidates."""
        if self.unlabelled is None or not len(self.unlabelled):
            return self.images, self.names
        return np.concatenate([self.images, self.unlabelled]), self.seen_names

    @property
    def seen_names(self) -> list[str]:
        return [*self.names, *self.unlabelled_names]

    @classmethod
    def from_dataset(cls, dataset: PairDataset, where: str = "") -> RealPairs:
        cases = list(dataset.cases)
        return cls(
            np.stack([np.asarray(i, np.float32) / 255.0 for i in dataset.images]),
            np.stack([np.asarray(m) > 0 for m in dataset.masks]),
            [c.name for c in cases], [c.subject for c in cases], cases, where,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: list[int]) -> RealPairs:
        return RealPairs(self.images[index], self.masks[index])


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


RealSource = EvalSource | RealPairs  # a configured set (read at the synthetic size) or pairs already read
BoxJudgeFn = Callable[[torch.Tensor, np.ndarray], np.ndarray]


@dataclass
class Judging:
    """One set being judged: its folder, manifest entries and pairs, the generator's training pairs, the bar."""

    root: Path
    entries: list[ManifestEntry]
    pairs: RealPairs
    train: RealPairs
    bar: Any
    mask_passed: list[bool] = field(default_factory=list)  # the mask checks' own verdict (``qc["passed"]``)

    def kept(self) -> np.ndarray:
        """Pairs QC passed (by the mask checks) and not memorised: those the set-level figures are over."""
        return np.array(
            [ok and not e.memorised for ok, e in zip(self.mask_passed, self.entries, strict=True)]
        )


class Judge:
    """Judges written synthetic sets (module doc); Hydra builds it from ``fidelity`` of ``conf/sample.yaml``.

    Args:
        features: image features of KID/FID and the nearest-neighbour check (``fidelity/features``).
        heldout: real pairs the generator never saw (an ``eval_data`` source): KID/FID against them and the
            agreement ceiling; None: a fifth of the training subjects, held out from the reference segmenter.
        reference: fixed real pairs of the measurement segmenter (needs ``heldout``; refused if the two share an
            image or subject), named in the summary.
        box_judge: a box-prompted pretrained segmenter
            (:class:`~fetalgen.segmentation.box_judge.BoxJudge`): ``agreement_pretrained``, beside the CNNs'.
        enabled: ``fidelity.enabled`` (the task builds no judge when false).
        settings: the fields of :class:`JudgeSettings`.
    """

    def __init__(self, features: Features, heldout: RealSource | None = None, reference: RealSource | None = None,
                 box_judge: BoxJudgeFn | None = None, enabled: bool = True, **settings: Any) -> None:  # fmt: skip
        if reference is not None and heldout is None:
            raise ValueError("fidelity.reference (the measurement segmenter's pairs) needs fidelity.heldout: the "
                             "real pairs its ceiling is measured on")  # fmt: skip
        self.features, self.box_judge, self.enabled = features, box_judge, enabled
        self.settings = JudgeSettings(**settings)
        self.sources = {"heldout": heldout, "reference": reference}
        self.read: dict[tuple[str, int], RealPairs] = {}

    def real(self, key: str, size: int) -> RealPairs | None:
        """The ``heldout`` or ``reference`` pairs at ``size``, read once."""
        source = self.sources[key]
        if source is None or isinstance(source, RealPairs):
            return source
        if (key, size) not in self.read:
            where = f"({source.name}{', ' + source.list_file if source.list_file else ''})"
            self.read[key, size] = RealPairs.from_dataset(source.load(size).dataset, where)
        return self.read[key, size]

    def prepare(self, size: int) -> None:
        """Read the real pairs at ``size`` now (a bad file fails before sampling) and refuse a reference set that
        shares an image or subject with the held-out one (its ceiling would be measured on training pairs)."""
        heldout, reference = self.real("heldout", size), self.real("reference", size)
        if reference is None or not reference.cases:
            return
        overlap = find_overlap(case_records(reference.cases), heldout.cases)
        if overlap:
            raise LeakageError(f"fidelity.reference shares {len(overlap)} image(s) or subject(s) with "
                               f"fidelity.heldout (the ceiling would be measured on training pairs): "
                               f"{', '.join(overlap[:10])}")  # fmt: skip

    def __call__(self, root: str | Path, train: RealPairs) -> dict[str, Any]:
        """Judge the set at ``root`` against the generator's training pairs ``train``: update its manifest, write
        the gallery, return the figures (``summary.json["fidelity"]``)."""
        root = Path(root)
        entries = sorted(read_manifest(root), key=lambda e: e.index)
        if len(train) < 2 or not entries:
            raise ValueError(f"judging {root} needs at least 2 training pairs and 1 synthetic pair")
        size = int(train.images.shape[-1])
        self.prepare(size)
        heldout = self.real("heldout", size)
        if self.sources["reference"] is not None and not len(heldout):
            raise ValueError(
                "a measurement reference set needs held-out real pairs for its ceiling (fidelity.heldout)"
            )
        pairs = read_pairs(root, entries, size)
        n_held = len(heldout) if heldout is not None and len(heldout) >= 2 else 0
        segmenters = 1 if self.sources["reference"] is None else 2
        total = segmenters * self.settings.segmenter_steps + 2 * len(pairs) + len(train.seen[0]) + n_held
        bar = progress_bar(total, "judge", "step|img", disable=not self.settings.progress)
        mask_passed = [bool(e.qc.get("passed", e.qc_pass)) for e in entries]
        job = Judging(root, entries, pairs, train, bar, mask_passed)
        agreement, measured = self.agreement(job, heldout)
        pretrained = self.pretrained(job, heldout)
        bar.set_postfix_str(f"features ({self.features.name})")
        feats = {"synthetic": self.embed(pairs.images, bar), "train": self.embed(train.images, bar)}
        seen, seen_names = train.seen
        seen_feats = feats["train"]
        if len(seen) > len(train):  # the unlabelled images too: a copy of one is a copy
            seen_feats = torch.cat([seen_feats, self.embed(seen[len(train) :], bar)])
        similarity, nearest = nearest_neighbours(
            feats["synthetic"], self.embed(pairs.images[:, :, ::-1], bar), seen_feats
        )
        self.write_verdicts(job, agreement["per_pair"], similarity, nearest)
        kept = np.array([exclusion(e) is None for e in entries])  # now with the agreement verdict
        realism, realism_note = self.realism(job, feats, kept, heldout if n_held else None)
        spread = self.diversity(job, kept, heldout)
        bar.close()
        gallery = save_gallery(
            pairs.images, seen, similarity, nearest, [e.name for e in entries], root / GALLERY,
            k=self.settings.gallery, feature_name=self.features.name, train_names=seen_names,
        )  # fmt: skip
        own = {
            **public(agreement),
            "min_agreement": self.settings.min_agreement,
            "qc_failed": sum(any(r.startswith(AGREEMENT) for r in e.qc.get("reasons", [])) for e in entries),
        }
        return {
            "features": self.features.name,
            "over": f"{int(kept.sum())} kept pairs (QC passed, not memorised) of {len(entries)}",
            "realism": realism,
            "realism_note": realism_note,
            "diversity": spread,
            # the measurement (the fixed reference's segmenter when given), and the own-labels figures QC used
            "agreement": own if measured is None else public(measured),
            "agreement_own": own,
            "agreement_pretrained": pretrained,
            "nearest_neighbours": {
                "median_similarity": float(np.median(similarity)),
                "max_similarity": float(similarity.max()),
                "gallery": str(gallery),
            },
        }

    def embed(self, images: np.ndarray, bar: Any) -> torch.Tensor:
        """Features of ``images`` in chunks of ``settings.embed_chunk`` (the bar moves once per chunk)."""
        out = []
        for k in range(0, len(images), self.settings.embed_chunk):
            out.append(self.features(as_tensor(images[k : k + self.settings.embed_chunk])))
            bar.update(len(out[-1]))
        return torch.cat(out)

    def agreement(
        self, job: Judging, heldout: RealPairs | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Agreement by the segmenter of the generator's own pairs (the per-pair figures QC uses) and, with a
        reference set, by the measurement segmenter; both against the same ceiling."""
        settings, train = self.settings, job.train
        if heldout is not None and len(heldout):
            fit, ceiling, ceiling_source = list(range(len(train))), heldout, "held-out real pairs"
        else:
            fit, held = ceiling_split(train.subjects, settings.seed)
            ceiling = train.subset(held)
            ceiling_source = (
                f"{len(held)} training pair(s) held out from the segmenter (no held-out set given)"
            )
        job.bar.set_postfix_str("reference segmenter (own pairs)")
        own, own_loss = fit_segmenter(train.subset(fit), settings, lambda: job.bar.update(1))
        agreement = agreement_figures(own, job.pairs, ceiling, job.kept(), settings.seed, {
            "ceiling_source": ceiling_source,
            "segmenter": f"prompt-free CNN, {settings.segmenter_steps} steps on the generator's {len(fit)} real "
                         f"training pairs (final loss {own_loss:.3f})"})  # fmt: skip
        reference = self.real("reference", int(train.images.shape[-1]))
        if reference is None:
            return agreement, None
        job.bar.set_postfix_str("reference segmenter (measurement)")
        fixed, fixed_loss = fit_segmenter(reference, settings, lambda: job.bar.update(1))
        measured = agreement_figures(fixed, job.pairs, ceiling, job.kept(), settings.seed, {
            "ceiling_source": ceiling_source,
            "segmenter": f"prompt-free CNN, {settings.segmenter_steps} steps on {len(reference)} fixed real pairs "
                         f"{reference.where} (final loss {fixed_loss:.3f})"})  # fmt: skip
        return agreement, measured

    def pretrained(self, job: Judging, heldout: RealPairs | None) -> dict[str, Any] | None:
        """Agreement by the box judge (ceiling: the held-out pairs, else the training pairs; floor: each image in
        another pair's box)."""
        if self.box_judge is None:
            return None
        job.bar.set_postfix_str("box judge (pretrained)")
        real = heldout if heldout is not None and len(heldout) else job.train
        kept = job.kept()
        figures = boxed_agreement(self.box_judge, as_tensor(job.pairs.images[kept]), job.pairs.masks[kept],
                                  as_tensor(real.images), real.masks, self.settings.seed)  # fmt: skip
        source = "held-out real pairs" if real is heldout else "the generator's training pairs"
        return {**public(figures), "segmenter": self.box_judge.name, "ceiling_source": source}

    def write_verdicts(
        self, job: Judging, agreement: np.ndarray, similarity: np.ndarray, nearest: np.ndarray
    ) -> None:
        """Each pair's agreement, nearest training image and verdict (:func:`qc_verdict`) into the manifest."""
        names = job.train.seen_names
        for e, ok, agree, sim, near in zip(
            job.entries, job.mask_passed, agreement, similarity, nearest, strict=True
        ):
            e.pair_agreement, e.feature_similarity = float(agree), float(sim)
            e.nearest_train = names[int(near)]
            e.qc_pass, reasons = qc_verdict(
                ok, e.qc.get("reasons", []), float(agree), self.settings.min_agreement
            )
            e.qc = {**e.qc, "passed": ok, "reasons": reasons}
        text = "".join(e.to_json() + "\n" for e in job.entries)
        atomic_write(job.root / MANIFEST, lambda tmp: tmp.write_text(text))

    def realism(self, job: Judging, feats: dict[str, torch.Tensor], kept: np.ndarray,
                heldout: RealPairs | None) -> tuple[dict[str, Any], str | None]:  # fmt: skip
        """KID/FID of the kept pairs against the training images and the held-out ones, with a note when they
        are too few to read."""
        n, s = int(kept.sum()), self.settings
        if n < 2:
            log.warning("%s: %d kept pair(s): realism and diversity need 2", job.root, n)
            return {}, None
        note = None
        if n < FEW_FOR_REALISM:
            note = (f"KID/FID from {n} kept pairs: too few to read (the estimators need tens to hundreds of "
                    "images); compare sets of equal size only")  # fmt: skip
            log.warning("%s: %s", job.root, note)
        synthetic = feats["synthetic"][kept]
        realism = {"train": kid_fid(feats["train"], synthetic, s.kid_subset_size, s.kid_subsets, s.seed)}
        if heldout is not None:
            held = self.embed(heldout.images, job.bar)
            realism["heldout"] = kid_fid(held, synthetic, s.kid_subset_size, s.kid_subsets, s.seed)
        return realism, note

    def diversity(self, job: Judging, kept: np.ndarray, heldout: RealPairs | None) -> dict[str, float]:
        """Mean pairwise MS-SSIM of the kept synthetic images beside the training (and held-out) images'."""
        s = self.settings
        spread = {"synthetic": diversity(as_tensor(job.pairs.images[kept]), s.diversity_pairs, s.seed),
                  "train": diversity(as_tensor(job.train.images), s.diversity_pairs, s.seed)}  # fmt: skip
        if heldout is not None and len(heldout) >= 2:
            spread["heldout"] = diversity(as_tensor(heldout.images), s.diversity_pairs, s.seed)
        return spread
