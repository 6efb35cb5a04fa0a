"""Synthetic datasets written by ``fetalgen-sample``: the generic folder layout plus ``manifest.jsonl``.

Layout::

    <root>/images/syn_000042.png     grayscale uint8
    <root>/masks/syn_000042.png      filled binary mask (0/255)
    <root>/manifest.jsonl            one JSON object a line, written last for each pair
    <root>/summary.json              QC summary (see fetalgen.metrics.synthesis)

A manifest line (:class:`ManifestEntry`) records everything needed to reproduce and to judge the pair.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fetalgen.data.cases import Case, DataError
from fetalgen.data.verdict import qc_verdict
from fetalgen.utils.files import json_safe

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class ManifestEntry:
    """One synthetic pair: provenance and quality figures.

    Attributes:
        index: position in the dataset (0..N-1); the pair's seed derives from it.
        name: file stem (``syn_000042``).
        image: image path relative to the dataset root.
        mask: mask path relative to the dataset root.
        seed: the seed of this pair's noise (same seed, same pair).
        checkpoint_sha256: hash of the diffusion checkpoint that made it.
        sampler: a name of :data:`fetalgen.diffusion.sampling.SAMPLERS`.
        steps: number of sampling steps.
        mode: ``joint`` or ``mask_conditioned``.
        class_label: the class the sample was conditioned on (``None``: unconditional).
        guidance_scale: classifier-free guidance scale (1.0: none).
        qc_pass: whether the pair passed quality control (failed pairs stay on disk, marked here).
        qc: QC figures (ellipse-fit IoU, area fraction, centroid, reasons for failure).
        max_train_similarity: highest similarity to any training image (memorisation check).
        max_train_mask_iou: highest IoU of the mask with any training mask, mirrors included (a copied mask: 1).
        memorised: whether that similarity is above the configured threshold.
        pixel_size_mm: nominal pixel size of the synthetic image, if known.
        pair_agreement: Dice between a reference segmenter's mask of the image and the generated mask
            (:mod:`fetalgen.synthesis.judge`); None until the set is judged.
        feature_similarity: highest feature-space cosine similarity to a training image, mirror included
            (:mod:`fetalgen.metrics.fidelity`); None until judged.
        nearest_train: the name of that training image.
        source: the image a pseudo-label was drawn for (``mode`` ``pseudo_label``); None for a generated pair.
    """

    index: int
    name: str
    image: str
    mask: str
    seed: int
    checkpoint_sha256: str
    sampler: str
    steps: int
    mode: str = "joint"
    class_label: int | None = None
    guidance_scale: float = 1.0
    qc_pass: bool = True
    qc: dict[str, Any] = field(default_factory=dict)
    max_train_similarity: float | None = None
    max_train_mask_iou: float | None = None
    memorised: bool = False
    pixel_size_mm: float | None = None
    pair_agreement: float | None = None
    feature_similarity: float | None = None
    nearest_train: str | None = None
    source: str | None = None

    def to_json(self) -> str:
        """One manifest line, standard JSON (a NaN figure, e.g. a failed fit in ``qc``, is null)."""
        return json.dumps(json_safe(asdict(self)), sort_keys=True, allow_nan=False)


def set_roots(value: str | Path | Iterable[str | Path] | None) -> list[Path]:
    """A ``synthetic_dir`` setting (one set, a list of sets, or none) as the list of its folders."""
    if not value:
        return []
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def read_manifest(root: str | Path) -> list[ManifestEntry]:
    """Read ``<root>/manifest.jsonl``; a malformed line raises :class:`DataError` naming its line number."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(path, "no manifest.jsonl: not a synthetic dataset written by fetalgen-sample")
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(ManifestEntry(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            raise DataError(path, f"line {lineno} is not a manifest entry: {err}") from err
    return entries


def exclusion(
    entry: ManifestEntry,
    min_agreement: float | None = None,
    manifest: Path | None = None,
    include_memorised: bool = False,
) -> str | None:
    """Why a set's reader leaves ``entry`` out, or None when it is kept: ``qc_failed`` (its verdict, by
    :func:`~fetalgen.data.verdict.qc_verdict` with ``min_agreement`` when one is given, else the set's own
    ``qc_pass``), ``below_agreement`` (its mask passed, its agreement did not) or ``memorised``.

    Raises:
        DataError: ``min_agreement`` given but the pair was never judged (no ``pair_agreement``).
    """
    if min_agreement is None:
        passed, too_low = entry.qc_pass, False
    else:
        if entry.pair_agreement is None:
            raise DataError(manifest or MANIFEST, f"index {entry.index} has no pair_agreement: judge the set "
                            "(fetalgen-sample with fidelity.enabled=true) before filtering by agreement")  # fmt: skip
        mask_passed = bool(entry.qc.get("passed", entry.qc_pass))
        passed, _ = qc_verdict(mask_passed, entry.qc.get("reasons", []), entry.pair_agreement, min_agreement)
        too_low = mask_passed and not passed
    if not passed:
        return "below_agreement" if too_low else "qc_failed"
    if entry.memorised and not include_memorised:
        return "memorised"
    return None


def read_synthetic(
    root: str | Path,
    include_failed: bool = False,
    include_memorised: bool = False,
    min_agreement: float | None = None,
) -> tuple[list[Case], dict[str, int]]:
    """The cases of a synthetic dataset, and counts of what was excluded.

    Args:
        root: dataset root (with ``manifest.jsonl``).
        include_failed: keep pairs that failed QC (default: exclude them).
        include_memorised: keep pairs flagged as near-copies of a generator training image (default: exclude).
        min_agreement: also exclude pairs whose ``pair_agreement`` (the judge's, by the generator's own training
            pairs) is below it; ``None``: no agreement filter.

    Returns:
        ``(cases, counts)`` with ``counts = {"total", "kept", "qc_failed", "memorised", "below_agreement"}``;
        excluded pairs are counted, never silently dropped.

    Raises:
        DataError: ``min_agreement`` set but a pair was never judged (no ``pair_agreement``).

    Which pairs are kept is :func:`exclusion`'s verdict, the rule the judge applies (one implementation).
    """
    root = Path(root)
    entries = read_manifest(root)
    cases: list[Case] = []
    counts = {"total": len(entries), "kept": 0, "qc_failed": 0, "memorised": 0, "below_agreement": 0}
    for e in entries:
        why = exclusion(e, min_agreement, root / MANIFEST, include_memorised=True)
        if why is not None:
            counts[why] += 1
            if not (why == "qc_failed" and include_failed):
                continue
        if e.memorised:
            counts["memorised"] += 1
            if not include_memorised:
                continue
        image, mask = root / e.image, root / e.mask
        for p in (image, mask):
            if not p.resolve().is_relative_to(root.resolve()):
                raise DataError(root / MANIFEST, f"index {e.index} names {p}, outside the set: refused")
            if not p.is_file():
                raise DataError(p, f"listed in {root / MANIFEST} (index {e.index}) but missing")
        cases.append(
            Case(
                name=e.name,
                image_path=image,
                mask_path=mask,
                subject=e.name,
                pixel_size_mm=e.pixel_size_mm,
                cohort="synthetic",
            )
        )
    counts["kept"] = len(cases)
    return cases, counts


def synthetic_cases(root: str | Path) -> list[Case]:
    """The pairs of a synthetic dataset that passed QC and the memorisation check (a reader for an evaluation
    set); what was left out is logged with its counts."""
    cases, counts = read_synthetic(root)
    log.info("synthetic set %s: %s (QC-failed and memorised pairs excluded)", root, counts)
    return cases
