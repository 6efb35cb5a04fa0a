"""Torch Datasets at a square working resolution, cached in memory: image/mask pairs, and images without masks."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from fetalgen.data.cases import Case, DataError
from fetalgen.data.hc18 import trimester_from_hc
from fetalgen.data.io import bad_input, check_on_bad, load_image, load_pair, warn_skipped
from fetalgen.data.transforms import build_augmentation, pad_resize
from fetalgen.utils.seeds import derive_seed, name_key

PAIRS, IMAGES = "pairs", "images"  # the two parts of a training batch with unlabelled images


class PairDataset(Dataset):
    """Image/mask pairs, validated and resized once (``pad_resize``), augmented on every access (or through a
    fixed number of seeded views per pair).

    Every pair is loaded and checked when the dataset is built, so a bad file fails at once, not mid-epoch.

    Args:
        cases: the pairs.
        image_size: working side ``S`` in pixels.
        augment: ``none``, ``weak`` or ``strong`` (see :func:`~fetalgen.data.transforms.build_augmentation`).
        on_bad_pair: ``"raise"`` the first :class:`DataError`, or ``"skip"`` bad pairs with one warning giving
            their count and files (kept cases in ``self.cases``, errors in ``self.skipped``).
        seed: seed of the augmentation's random state (DataLoader workers reseed it, see :func:`seed_worker`).
        views: with augmentation, ``K`` fixed views per pair instead of a fresh draw on every access: the
            dataset then has ``N * K`` items, item ``j`` being view ``j % K`` of pair ``j // K``, drawn with the
            seed ``derive_seed(seed, name_key(name), view)`` (:mod:`fetalgen.utils.seeds`). An epoch shows every
            view once; a content-keyed embedding cache computes each view once. None: fresh draws.
        mask_regions: a mask of several separate regions: ``raise``, or keep the ``largest`` (counted in
            ``self.repaired`` and one warning).

    Items are dicts: ``image`` float32 [1,S,S] in [0,1]; ``mask`` float32 [1,S,S] in {0,1}; ``name`` str;
    ``pixel_size_mm`` float at working resolution (nan if unknown); ``hc_mm`` float (nan if unknown);
    ``trimester`` int (-1 if unknown); ``index`` int (position in ``self.cases``).
    """

    def __init__(
        self,
        cases: list[Case],
        image_size: int,
        augment: str = "none",
        on_bad_pair: str = "raise",
        seed: int = 0,
        mask_regions: str = "raise",
        views: int | None = None,
    ) -> None:
        check_on_bad(on_bad_pair)
        if views is not None and views < 1:
            raise ValueError(
                f"views must be >= 1 (or None: a fresh augmentation on every access), got {views}"
            )
        self.image_size = int(image_size)
        self.augment_name = augment
        self.augment = build_augmentation(augment, seed=seed)
        self.seed = int(seed)
        self.views = views if self.augment is not None else None  # nothing to vary without augmentation
        self.cases: list[Case] = []
        self.skipped: list[DataError] = []
        self.repaired: list[Path] = []
        images, masks, pixel_sizes = [], [], []
        for case in cases:
            with bad_input(on_bad_pair, self.skipped):
                image, mask, scale = pad_resize(
                    *load_pair(case, mask_regions, self.repaired), self.image_size
                )
                if not mask.any():
                    size = self.image_size
                    raise DataError(case.mask_path, f"mask vanishes when resized to {size}x{size}")
                self.cases.append(case)
                images.append(image)
                masks.append(mask.astype(np.uint8))
                pixel_sizes.append(math.nan if case.pixel_size_mm is None else case.pixel_size_mm * scale)
        warn_skipped(self.skipped, f"PairDataset ({len(cases)} cases)")
        if self.repaired:
            listing = "\n  ".join(map(str, self.repaired))
            warnings.warn(
                f"PairDataset: {len(self.repaired)} mask(s) had several regions; kept the largest of each:\n  {listing}",
                UserWarning,
                stacklevel=2,
            )
        self.images = images
        self.masks = masks
        self.pixel_sizes = pixel_sizes

    def __len__(self) -> int:
        return len(self.cases) * (self.views or 1)

    def reseed(self, seed: int) -> None:
        """Reset the augmentation's random state (used per DataLoader worker)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed)

    def __getitem__(self, item: int) -> dict:
        index, view = divmod(item, self.views) if self.views else (item, None)
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None:
            if view is not None:
                self.augment.set_random_seed(derive_seed(self.seed, name_key(self.cases[index].name), view))
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        case = self.cases[index]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0)[None],
            "mask": torch.from_numpy((mask > 0).astype(np.float32))[None],
            "name": case.name,
            "pixel_size_mm": float(self.pixel_sizes[index]),
            "hc_mm": math.nan if case.hc_mm is None else float(case.hc_mm),
            "trimester": trimester_from_hc(case.hc_mm),
            "index": index,
        }


class ImageDataset(Dataset):
    """Images without their masks (the unlabelled pool), read, checked and resized once like
    :class:`PairDataset`'s (``pad_resize``), never augmented.

    Items are dicts: ``image`` float32 [1,S,S] in [0,1]; ``mask`` float32 [1,S,S] of zeros (no mask: the
    mask-conditioned generator's unconditional input); ``name`` str; ``trimester`` -1 (unknown); ``index`` int.
    """

    def __init__(self, cases: list[Case], image_size: int, on_bad_pair: str = "raise") -> None:
        check_on_bad(on_bad_pair)
        self.image_size = int(image_size)
        self.cases: list[Case] = []
        self.skipped: list[DataError] = []
        self.images: list[np.ndarray] = []
        for case in cases:
            with bad_input(on_bad_pair, self.skipped):
                image = load_image(case.image_path)
                resized, _, _ = pad_resize(image, np.zeros(image.shape[:2], bool), self.image_size)
                self.cases.append(case)
                self.images.append(resized)
        warn_skipped(self.skipped, f"ImageDataset ({len(cases)} images)")

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)[None]
        return {"image": image, "mask": torch.zeros_like(image), "name": self.cases[index].name,
                "trimester": -1, "index": index}  # fmt: skip


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation its own seed from torch's worker seed.

    Torch derives the worker seed from the DataLoader's generator, so runs with the same seed match.
    """
    info = get_worker_info()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    dataset = info.dataset if info is not None else None
    while dataset is not None:
        if isinstance(dataset, PairDataset):
            dataset.reseed(seed)
            return
        if hasattr(dataset, "datasets"):  # ConcatDataset
            for i, d in enumerate(dataset.datasets):
                if isinstance(d, PairDataset):
                    d.reseed((seed + i) % 2**32)
            return
        dataset = getattr(dataset, "dataset", None)  # Subset
