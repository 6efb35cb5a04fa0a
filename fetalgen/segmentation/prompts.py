"""Box prompts from a ground-truth mask: tight, jittered (MedSAM / paper protocol) and whole-image.

A box is float32 [4] XYXY in pixel coordinates of the working image, inclusive of the mask extent:
``x0, y0`` = smallest column, row of the mask; ``x1, y1`` = largest column, row. So a box always lies in
``[0, W-1] x [0, H-1]`` and the whole-image box is ``(0, 0, W-1, H-1)``.
"""

from __future__ import annotations

import numpy as np

from fetalgen.utils.seeds import name_key, seeded_rng

BOX_MODES = ("jitter", "tight", "full")  # boxes made from the true mask (or the image size)
# Evaluation also takes ``auto``: the model finds its own box (fetalgen.segmentation.predictor).
PROMPT_MODES = (*BOX_MODES, "auto")


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Smallest box around a bool HxW mask: float32 [4] ``(x0, y0, x1, y1)``; ValueError if the mask is empty."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


def full_box(shape: tuple[int, int]) -> np.ndarray:
    """The whole image ``(0, 0, W-1, H-1)`` for ``shape`` (H, W): the "no prompt" box. float32 [4]."""
    h, w = shape[:2]
    return np.array([0, 0, w - 1, h - 1], dtype=np.float32)


def jittered_box(
    mask: np.ndarray, rng: np.random.Generator, max_jitter_px: int = 20, ref_size: int = 256
) -> np.ndarray:
    """Tight box with each side pushed outward by a random amount, clipped to the image.

    Each side moves by ``k * S / ref_size`` px with an integer ``k`` drawn uniformly from
    ``0..max_jitter_px`` (inclusive), ``S`` the longer side of ``mask``: the paper's 0-20 px measured at 256 x 256,
    scaled to the working resolution. The four draws come from ``rng`` in the order x0, y0, x1, y1.

    Args:
        mask: bool HxW, non-empty.
        rng: the source of randomness (``np.random.default_rng(seed)``).
        max_jitter_px: largest shift per side at ``ref_size``.
        ref_size: the resolution at which ``max_jitter_px`` is measured.

    Returns:
        float32 [4] XYXY box containing the tight box.
    """
    box = tight_box(mask)
    h, w = np.shape(mask)[:2]
    scale = max(h, w) / ref_size
    shift = rng.integers(0, max_jitter_px + 1, size=4) * scale
    box = box + np.array([-1, -1, 1, 1]) * shift
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


def make_box(
    mask: np.ndarray,
    mode: str,
    rng: np.random.Generator | None,
    max_jitter_px: int = 20,
    ref_size: int = 256,
) -> np.ndarray:
    """Box prompt of the given mode: ``"jitter"`` (needs ``rng``), ``"tight"`` or ``"full"``. float32 [4] XYXY."""
    if mode == "jitter":
        if rng is None:
            raise ValueError("box mode 'jitter' needs an rng (np.random.Generator)")
        return jittered_box(mask, rng, max_jitter_px=max_jitter_px, ref_size=ref_size)
    if mode == "tight":
        return tight_box(mask)
    if mode == "full":
        return full_box(np.shape(mask))
    raise ValueError(f"unknown box mode {mode!r}; valid modes: {', '.join(BOX_MODES)}")


def prompt_boxes(
    mask: np.ndarray,
    name: str,
    mode: str,
    repetitions: int,
    seed: int,
    max_jitter_px: int = 20,
    ref_size: int = 256,
) -> np.ndarray:
    """The ``[R, 4]`` evaluation boxes of the image ``name``: repetition ``r`` draws from
    ``seeded_rng(seed, r, name_key(name))``. The one rule of validation (repetition 0, the same box every
    validation) and evaluation, so a validation box is the test's first box of the same image."""
    rngs = [seeded_rng(seed, r, name_key(name)) for r in range(repetitions)]
    return np.stack([make_box(mask, mode, rng, max_jitter_px, ref_size) for rng in rngs])
