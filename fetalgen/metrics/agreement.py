"""Image-mask agreement of synthetic pairs: does the generated mask outline the head drawn in the generated image?

A reference segmenter, trained on real pairs only (:mod:`fetalgen.synthesis.reference`), segments each synthetic
image; the Dice between its prediction and the generated mask is the pair's agreement. To place that figure, the
same segmenter is scored on held-out real pairs (the ceiling: what agreement looks like for true pairs) and on the
synthetic images paired with the mask of *another* synthetic pair (the floor: what a mask unrelated to its image
scores). Pure functions: the segmenter is passed in as a prediction function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fetalgen.metrics.overlap import dice_score


def pair_dice(predicted: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dice of each predicted mask ``[N, S, S]`` with its paired mask ``[N, S, S]``."""
    return np.array([dice_score(p, m) for p, m in zip(predicted, masks, strict=True)], dtype=np.float64)


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``range(n)`` that moves every index (n >= 2): a random cyclic shift of a
    random order."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    shift = int(rng.integers(1, n))
    out = np.empty(n, dtype=np.int64)
    out[order] = order[(np.arange(n) + shift) % n]
    return out


def calibrated_agreement(
    predict: Callable[[torch.Tensor], np.ndarray],
    synthetic_images: torch.Tensor,
    synthetic_masks: np.ndarray,
    real_images: torch.Tensor,
    real_masks: np.ndarray,
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> dict[str, object]:
    """Per-pair agreement of the synthetic pairs, with its ceiling (held-out real pairs) and floor (synthetic
    images with the mask of another synthetic pair). ``predict``: images -> bool masks (a reference segmenter,
    :class:`fetalgen.synthesis.reference.ReferenceSegmenter`); ``*_images`` ``[N, 1, S, S]`` in [0, 1], masks bool
    ``[N, S, S]``; ``keep`` (bool ``[N]``, default all): the pairs the mean and the floor are taken over."""
    predicted = predict(synthetic_images)
    per_pair = pair_dice(predicted, synthetic_masks)
    keep = np.ones(len(per_pair), bool) if keep is None else np.asarray(keep, bool)
    kept_pred, kept_masks = predicted[keep], synthetic_masks[keep]
    floor = pair_dice(kept_pred, kept_masks[derangement(len(kept_pred), seed)]) if len(kept_pred) > 1 else []
    ceiling = pair_dice(predict(real_images), real_masks) if len(real_images) else np.zeros(0)

    def mean(values: np.ndarray | list) -> float | None:
        return float(np.mean(values)) if len(values) else None

    return {
        "per_pair": per_pair,
        "synthetic": mean(per_pair[keep]),
        "synthetic_all": mean(per_pair),
        "ceiling": mean(ceiling),
        "floor": mean(floor),
        "n_synthetic": int(keep.sum()),
        "n_ceiling": len(ceiling),
    }


def boxed_agreement(
    predict: Callable[[torch.Tensor, np.ndarray], np.ndarray],
    synthetic_images: torch.Tensor,
    synthetic_masks: np.ndarray,
    real_images: torch.Tensor,
    real_masks: np.ndarray,
    seed: int = 0,
) -> dict[str, object]:
    """:func:`calibrated_agreement` for a box-prompted segmenter (a pretrained SAM: it knows what a head looks
    like and was trained on nobody's labels here). ``predict(images, masks)`` segments each image in the tight box
    of its mask; a pair agrees when the prediction fills its own mask. The floor prompts each synthetic image with
    the box of *another* pair's mask and scores the prediction against that mask, so it measures what a box alone
    explains (a segmenter that fills any box scores the floor as high as the pairs)."""
    per_pair = pair_dice(predict(synthetic_images, synthetic_masks), synthetic_masks)
    floor = np.zeros(0)
    if len(synthetic_masks) > 1:
        others = synthetic_masks[derangement(len(synthetic_masks), seed)]
        floor = pair_dice(predict(synthetic_images, others), others)
    ceiling = pair_dice(predict(real_images, real_masks), real_masks) if len(real_images) else np.zeros(0)

    def mean(values: np.ndarray) -> float | None:
        return float(np.mean(values)) if len(values) else None

    return {"per_pair": per_pair, "synthetic": mean(per_pair), "ceiling": mean(ceiling), "floor": mean(floor),
            "n_synthetic": len(per_pair), "n_ceiling": len(ceiling)}  # fmt: skip
