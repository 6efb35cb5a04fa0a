"""Pseudo-labels of unlabelled images: the automatic prompt of a fine-tuned SAM, judged by a :class:`KeepRule`.

The images are read as images only (their cases carry no mask); every embedding goes through the predictor's
cache, so a frozen pretrained encoder encodes each pool image once for every teacher of a sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fetalgen.data.cases import Case
from fetalgen.data.io import load_image
from fetalgen.metrics.synthesis import QCResult
from fetalgen.pseudo.rule import KeepRule
from fetalgen.segmentation.predictor import AUTO_ROUNDS, SamBoxPredictor
from fetalgen.segmentation.segmenter import logits_to_image, to_working
from fetalgen.utils.bars import progress_bar
from fetalgen.utils.masks import fill_holes, largest_component


@dataclass(frozen=True)
class PseudoLabel:
    """One unlabelled image with the mask SAM drew for it (at the image's own size) and the rule's verdict."""

    case: Case
    image: np.ndarray  # uint8 HxW, as read
    mask: np.ndarray  # bool HxW
    predicted_iou: float
    verdict: QCResult


def pseudo_labels(
    predictor: SamBoxPredictor,
    cases: Sequence[Case],
    rule: KeepRule,
    image_size: int,
    batch_size: int = 8,
    rounds: int = AUTO_ROUNDS,
    progress: bool | None = None,
) -> Iterator[PseudoLabel]:
    """Label ``cases`` (images only) ``batch_size`` at a time at the teacher's working size ``image_size``, with
    a progress bar (:func:`~fetalgen.utils.bars.progress_bar`: whole lines outside a terminal; ``progress``
    False: none)."""
    with progress_bar(len(cases), "pseudo-label", "img", disable=progress is False) as bar:
        for start in range(0, len(cases), batch_size):
            part = cases[start : start + batch_size]
            images = [load_image(c.image_path) for c in part]
            works = [to_working(image, image_size) for image in images]
            tensor = torch.from_numpy(np.stack([w.image for w in works])).float().div(255.0)[:, None]
            embedded = predictor.embed(tensor)
            masks, ious = predictor.scored(embedded, predictor.auto_boxes(embedded, rounds))
            for case, image, work, mask, iou in zip(part, images, works, masks, ious, strict=True):
                cleaned, verdict = rule.verdict(mask, float(iou))
                # At the image's size, cleaned again: a thin neck of the working mask may part when resized.
                full = logits_to_image(cleaned.astype(np.float32), work, threshold=0.5)
                full = fill_holes(largest_component(full)) if full.any() else full
                yield PseudoLabel(case, image, full, float(iou), verdict)
            bar.update(len(part))
