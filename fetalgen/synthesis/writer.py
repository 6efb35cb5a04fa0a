"""Write a synthetic dataset from a trained joint diffusion model (step 1 of ``fetalgen-sample``).

Layout (see :mod:`fetalgen.data.synthetic`): ``images/syn_XXXXXX.png``, ``masks/syn_XXXXXX.png`` (0/255),
``manifest.jsonl`` (one :class:`~fetalgen.data.synthetic.ManifestEntry` a line) and ``summary.json``.

Crash safety and resumption: each PNG is written atomically (temp file, then rename) and the pair's manifest
line is appended (flushed and fsynced) last, so a pair counts as done only once its line exists. A restart
reads the manifest, skips the indices done and recomputes the others; an image or mask left without a
manifest line is overwritten with the same content, since pair ``i`` depends only on ``(seed, i)``. Pairs are
computed in fixed blocks ``[k*B, (k+1)*B)`` of the batch size ``B`` (padded past ``n``), so every pair is
computed in the same batch whatever the run's history, bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fetalgen.data.cases import DataError
from fetalgen.data.dataset import ImageDataset, PairDataset
from fetalgen.data.synthetic import MANIFEST, ManifestEntry, read_manifest
from fetalgen.data.verdict import qc_verdict
from fetalgen.diffusion.channels import unpack
from fetalgen.diffusion.postprocess import clean_mask
from fetalgen.diffusion.sampling import (
    make_sampler,
    masks_to_tensor,
    sample_pairs,
)
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.metrics.biometry import measure_head
from fetalgen.metrics.synthesis import (
    QCResult,
    best_mask_iou,
    format_summary,
    max_similarity,
    qc_mask,
    summarise_synthetic,
)
from fetalgen.utils.bars import progress_bar
from fetalgen.utils.files import append_line, atomic_write, png_intact, write_json, write_png
from fetalgen.utils.seeds import derive_seed, seeded_rng

log = logging.getLogger(__name__)

IMAGES, MASKS, SUMMARY = "images", "masks", "summary.json"
MODES = ("joint", "mask_conditioned")


def pair_name(index: int) -> str:
    """File stem of pair ``index`` (``syn_000042``)."""
    return f"syn_{index:06d}"


@dataclass(frozen=True)
class SynthesisSpec:
    """How the pairs are sampled (everything that, with the checkpoint, fixes pair ``i``).

    Attributes:
        sampler: ``ddpm``, ``ddim``, ``dpmsolver++`` or ``sde-dpmsolver++``.
        steps: sampling steps (None: the sampler's default).
        seed: base seed; pair ``i`` uses ``derive_seed(seed, i)``.
        mode: ``joint`` (image and mask generated together) or ``mask_conditioned`` (image generated for a head
            mask drawn from ``shape_prior``).
        class_label: ``"balanced"`` (cycle over the classes of a class-conditional model; null class for an
            unconditional one), ``None`` (null class) or a class index.
        guidance_scale: classifier-free guidance scale (1.0: none).
        batch_size: pairs per forward pass (also the block size of the deterministic batching).
        mask_threshold: threshold of the decoded mask channel in [-1, 1].
        shape_prior: the head-shape prior of the generator's training masks (``ShapePrior.to_dict``), from which
            ``mask_conditioned`` mode draws its masks; recorded with the set.
    """

    sampler: str = "sde-dpmsolver++"
    steps: int | None = 20
    seed: int = 0
    mode: str = "joint"
    class_label: str | int | None = "balanced"
    guidance_scale: float = 1.0
    batch_size: int = 16
    mask_threshold: float = 0.0
    shape_prior: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.class_label, str) and self.class_label != "balanced":
            raise ValueError(
                f"class_label must be 'balanced', null or a class index, got {self.class_label!r}"
            )
        if self.mode == "mask_conditioned" and self.shape_prior is None:
            raise ValueError(
                "mask_conditioned mode draws its masks from a shape prior of the training masks: none"
            )

    def label_of(self, index: int, num_classes: int) -> int | None:
        """The class label of pair ``index`` (None: null class)."""
        if self.class_label == "balanced":
            return index % num_classes if num_classes else None
        if self.class_label is not None and not num_classes:
            raise ValueError(f"class_label={self.class_label} but the model is unconditional")
        return None if self.class_label is None else int(self.class_label)

    def mask_of(self, index: int, size: int) -> np.ndarray:
        """The given head mask of pair ``index`` in ``mask_conditioned`` mode (bool [size, size])."""
        return ShapePrior.from_dict(self.shape_prior).mask(seeded_rng(self.seed, index), size)


@dataclass
class TrainReference:
    """The generator's training pairs, for the memorisation check, the fidelity figures and the summary.

    Attributes:
        images: float [M,S,S] in [0, 1] (M may be 0: no memorisation check).
        hc_px: head circumference (px, at S) of each training mask (nan where no ellipse fits).
        pixel_size_mm: median pixel size at S (None if unknown), recorded for the synthetic pairs.
        masks: bool [M,S,S] training masks.
        names, subjects: case name and subject of each training pair.
        unlabelled: float [U,S,S] images the generator saw without their masks (its unlabelled pool), named by
            ``unlabelled_names``: memorisation is checked against them too (:attr:`seen`).
    """

    images: np.ndarray
    hc_px: np.ndarray
    pixel_size_mm: float | None = None
    masks: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    unlabelled: np.ndarray | None = None
    unlabelled_names: list[str] = field(default_factory=list)

    @cached_property
    def seen(self) -> np.ndarray:
        """Every training image, labelled pairs first, then the unlabelled ones: what a copy would copy."""
        return self.images if self.unlabelled is None else np.concatenate([self.images, self.unlabelled])

    @property
    def seen_names(self) -> list[str]:
        return [*self.names, *self.unlabelled_names]

    @classmethod
    def from_dataset(cls, dataset: PairDataset, unlabelled: ImageDataset | None = None) -> TrainReference:
        """The pairs of ``dataset``, and the images of ``unlabelled`` (none: no unlabelled pool)."""
        images = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in dataset.images])
        masks = np.stack([np.asarray(m) > 0 for m in dataset.masks])
        hc = [m.hc if (m := measure_head(mask)) else math.nan for mask in masks]
        sizes = np.asarray(dataset.pixel_sizes, dtype=np.float64)
        sizes = sizes[np.isfinite(sizes)]
        return cls(
            images,
            np.asarray(hc, dtype=np.float64),
            float(np.median(sizes)) if sizes.size else None,
            masks,
            [c.name for c in dataset.cases],
            [c.subject for c in dataset.cases],
            np.stack([i.astype(np.float32) / 255.0 for i in unlabelled.images]) if unlabelled else None,
            [c.name for c in unlabelled.cases] if unlabelled else [],
        )

    @classmethod
    def empty(cls, size: int) -> TrainReference:
        return cls(np.zeros((0, size, size), np.float32), np.zeros(0), None, np.zeros((0, size, size), bool))


def blocks(todo: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """The aligned blocks ``[k*B, (k+1)*B)`` that contain at least one index of ``todo``, in order."""
    for k in sorted({i // batch_size for i in todo}):
        yield list(range(k * batch_size, (k + 1) * batch_size))


def repair_manifest(root: Path) -> list[ManifestEntry]:
    """Read the manifest, first dropping a last line cut short by a crash (no final newline), then the lines of
    pairs whose files are missing, empty or undecodable (e.g. written on a full disk): those are sampled again."""
    path = root / MANIFEST
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        atomic_write(path, lambda p: p.write_text(text[: text.rfind("\n") + 1]))
    entries = read_manifest(root)
    broken = {e.index for e in entries if not (png_intact(root / e.image) and png_intact(root / e.mask))}
    if broken:
        log.warning(
            "%s: %d pair(s) listed with missing or broken files (indices %s); they are sampled again",
            path, len(broken), sorted(broken)[:20],
        )  # fmt: skip
        listed = [
            line for line in path.read_text().splitlines() if line.strip()
        ]  # as read_manifest reads them
        lines = [line for line, e in zip(listed, entries, strict=True) if e.index not in broken]
        atomic_write(path, lambda p: p.write_text("".join(f"{line}\n" for line in lines)))
        entries = [e for e in entries if e.index not in broken]
    return entries


def check_resumable(root: Path, entries: list[ManifestEntry], expected: dict[str, Any]) -> None:
    """Raise :class:`DataError` if the existing manifest was written with other settings or has duplicates."""
    seen: set[int] = set()
    for e in entries:
        if e.index in seen:
            raise DataError(root / MANIFEST, f"index {e.index} appears twice")
        seen.add(e.index)
        for key, value in expected.items():
            if getattr(e, key) != value:
                raise DataError(
                    root / MANIFEST,
                    f"index {e.index} was written with {key}={getattr(e, key)!r}, this run has {value!r}; "
                    "write to a new folder or repeat the original settings",
                )


def clean_stale_temp_files(root: Path) -> None:
    """Remove temporary files left by an atomic write that was killed (hidden ``.syn_*`` files)."""
    for sub in (IMAGES, MASKS):
        for p in (root / sub).glob(".syn_*"):
            p.unlink()


@dataclass(frozen=True)
class LoadedGenerator:
    """A trained generator ready to sample (``fetalgen.diffusion.checkpoint.load_generator``'s UNet and scheduler).

    Attributes:
        unet: the generator (EMA weights), on the device to sample on.
        scheduler_config: the training scheduler config (the sampler is built from it).
        sha256: the checkpoint's hash, recorded in every manifest line; a resume must use the same checkpoint.
        num_classes: classes of a class-conditional model (0: unconditional).
    """

    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    sha256: str
    num_classes: int = 0


@dataclass(frozen=True)
class PairChecks:
    """What every written pair is checked for: its mask's plausibility and its likeness to the training pairs.

    Attributes:
        reference: the generator's training pairs (None: no memorisation check, no train head sizes).
        similarity_threshold: a pair whose max similarity exceeds it is flagged ``memorised``.
        similarity_size: thumbnail side of the similarity check.
        qc: keyword arguments of :func:`fetalgen.metrics.synthesis.qc_mask`.
    """

    reference: TrainReference | None = None
    similarity_threshold: float = 0.95
    similarity_size: int = 64
    qc: dict[str, Any] = field(default_factory=dict)


def write_synthetic(
    out: str | Path, n: int, generator: LoadedGenerator, spec: SynthesisSpec, checks: PairChecks | None = None,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Sample pairs ``0..n-1`` of ``generator`` by ``spec`` into ``out`` (created; pairs already in its manifest are
    kept), each checked by ``checks`` (None: the mask checks' defaults, no memorisation check); ``progress``: a
    progress bar. Returns the settings the set was written with (the spec, the steps, ``n``, the checkpoint's
    hash), for :func:`summarise_dataset`."""
    checks = checks or PairChecks()
    root = Path(out)
    scheduler, steps = make_sampler(spec.sampler, generator.scheduler_config, spec.steps)
    size = int(generator.unet.config.sample_size)
    reference = checks.reference if checks.reference is not None else TrainReference.empty(size)
    # Fields shared by every manifest line; a resumed run must match them.
    common = {
        "checkpoint_sha256": generator.sha256,
        "sampler": spec.sampler,
        "steps": steps,
        "mode": spec.mode,
        "guidance_scale": float(spec.guidance_scale),
    }
    done = {e.index for e in open_set(root, common, spec.seed)}
    todo = [i for i in range(n) if i not in done]
    qc_kwargs = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in checks.qc.items()}
    log.info("%s: %d of %d pairs done, %d to sample", root, n - len(todo), n, len(todo))
    bar = progress_bar(n, "sampling pairs", "pair", disable=not progress, initial=n - len(todo))
    for block in blocks(todo, spec.batch_size):
        labels = [spec.label_of(i, generator.num_classes) for i in block]
        given = None
        if spec.mode == "mask_conditioned":
            given = masks_to_tensor([spec.mask_of(i, size) for i in block])
        seeds = [derive_seed(spec.seed, i) for i in block]
        x = sample_pairs(generator.unet, scheduler, seeds, steps, size, labels, spec.guidance_scale, given)
        images, channels = unpack(x.float().cpu())
        images, channels = images[:, 0].numpy(), channels[:, 0].numpy()
        masks = np.stack([clean_mask(c, spec.mask_threshold) for c in channels])
        similarity, mask_iou = memorisation_figures(images, masks, reference, checks.similarity_size)
        for j, index in enumerate(block):
            if index in done or index >= n:  # block padding: computed for bit-exact batches, not written
                continue
            sim = None if similarity is None else float(similarity[j])
            mask_qc = qc_mask(masks[j], **qc_kwargs)
            passed, reasons = qc_verdict(mask_qc.passed, mask_qc.reasons)
            name = pair_name(index)
            entry = ManifestEntry(
                index=index, name=name, image=f"{IMAGES}/{name}.png", mask=f"{MASKS}/{name}.png", seed=seeds[j],
                class_label=labels[j], qc_pass=passed, qc={**mask_qc.to_dict(), "reasons": reasons},
                max_train_similarity=sim, max_train_mask_iou=None if mask_iou is None else float(mask_iou[j]),
                memorised=bool(sim is not None and sim > checks.similarity_threshold),
                pixel_size_mm=reference.pixel_size_mm, **common,
            )  # fmt: skip
            write_pair(root, entry, images[j], masks[j])
            bar.update(1)
    bar.close()
    return {**asdict(spec), "steps": steps, "n": n, "checkpoint_sha256": generator.sha256}


def open_set(root: Path, common: dict[str, Any], seed: int) -> list[ManifestEntry]:
    """Create or reopen the set at ``root``: stale temporary files removed, the manifest repaired, and its pairs
    checked against this run's ``common`` fields and base ``seed``; returns the pairs already written."""
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    (root / MASKS).mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(root)
    entries = repair_manifest(root)
    check_resumable(root, entries, common)
    for e in entries:  # pair i's seed derives from the base seed: another base seed would mix two sets
        if e.seed != derive_seed(seed, e.index):
            raise DataError(
                root / MANIFEST,
                f"index {e.index} was sampled with another base seed than seed={seed}; "
                "write to a new folder or repeat the original seed",
            )
    return entries


def memorisation_figures(
    images: np.ndarray, masks: np.ndarray, reference: TrainReference, size: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Each pair's highest image similarity (at ``size`` px) and mask IoU to the training pairs, for a block at
    once (the training set read once); None where the reference has none."""
    seen = reference.seen
    similarity = max_similarity(images, seen, size=size) if len(seen) else None
    has_masks = reference.masks is not None and len(reference.masks)
    return similarity, best_mask_iou(masks, reference.masks) if has_masks else None


def write_pair(root: Path, entry: ManifestEntry, image: np.ndarray, mask: np.ndarray) -> None:
    """The pair's two PNGs, then its manifest line: last, so the pair counts as done only once it is whole."""
    write_png(root / entry.image, np.round(image * 255).astype(np.uint8))
    write_png(root / entry.mask, mask.astype(np.uint8) * 255)
    append_line(root / MANIFEST, entry.to_json())


def summarise_dataset(
    root: Path,
    reference: TrainReference,
    threshold: float,
    settings: dict[str, Any] | None = None,
    fidelity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summary of every pair in ``root``'s manifest; printed as a table and written to ``summary.json``."""
    entries = sorted(read_manifest(root), key=lambda e: e.index)
    results = [QCResult(**{**e.qc, "passed": e.qc_pass}) for e in entries]  # the agreement threshold included
    sims = np.array([e.max_train_similarity for e in entries if e.max_train_similarity is not None])
    hc = []
    for e in entries:
        mask = cv2.imread(str(root / e.mask), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DataError(root / e.mask, f"listed in the manifest (index {e.index}) but unreadable")
        m = measure_head(mask > 0)
        hc.append(m.hc if m else math.nan)
    ious = [e.max_train_mask_iou for e in entries if e.max_train_mask_iou is not None]
    summary = summarise_synthetic(results, sims, threshold, np.asarray(hc), reference.hc_px, ious)
    if fidelity is not None:
        summary["fidelity"] = fidelity
    summary["settings"] = settings or {}
    write_json(root / SUMMARY, summary)
    print(f"Synthetic dataset {root}\n{format_summary(summary)}")
    return summary
