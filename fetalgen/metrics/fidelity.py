"""How a synthetic set compares with real images: realism (KID, FID), diversity (MS-SSIM) and nearest neighbours.

* KID and FID are torchmetrics' estimators on image features (:class:`Features`, e.g. those of
  :mod:`fetalgen.segmentation.features`, computed once and
  handed to torchmetrics through an identity extractor). KID (unbiased, averaged over random subsets) is the one to
  read at tens to hundreds of images; FID is biased upwards at such sizes and is given for familiarity. KID's
  estimator assumes the two sets are independent samples: a set compared with *itself* reads slightly negative.
* Diversity: mean MS-SSIM over random pairs of images within one set (lower = more diverse), beside the same figure
  within a real set. Small images use fewer scales (the first of the standard weights), named in the result.
* Nearest neighbours: for each synthetic image, the highest cosine similarity of its features (and of its mirror
  image's) to any training image's; a gallery shows the most similar (synthetic, training) pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, the torchmetrics default


class Features(Protocol):
    """Grayscale images ``[N, 1, S, S]`` in [0, 1] -> features ``[N, D]`` (float32, on the CPU), with a ``name``
    that every result carries."""

    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class _Precomputed(torch.nn.Module):
    """The identity, as the 'feature extractor' of torchmetrics' KID/FID when the features are already there."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def kid_fid(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int = 50, subsets: int = 100, seed: int = 0
) -> dict[str, float | int]:
    """KID (mean and std over subsets) and FID between two feature sets ``[N, D]``.

    ``subset_size`` is capped at the smaller set; the subsets are drawn from a generator seeded by ``seed``.
    """
    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(
            f"KID/FID need at least 2 images per set, got {len(real)} real and {len(fake)} synthetic"
        )
    size = min(subset_size, n)
    dim = real.shape[1]
    with (
        warnings.catch_warnings()
    ):  # "will save all extracted features in buffer": features are all it keeps here
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        kid = KernelInceptionDistance(
            feature=_Precomputed(dim), subsets=subsets, subset_size=size, normalize=True
        )
    fid = FrechetInceptionDistance(feature=_Precomputed(dim), normalize=True)
    for metric in (kid, fid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "fid": float(fid.compute()),
        "n_real": len(real),
        "n_synthetic": len(fake),
        "kid_subset_size": size,
    }


def ms_ssim_scales(side: int, kernel_size: int = 11) -> int:
    """How many MS-SSIM scales an image of ``side`` px allows (each scale halves it; the coarsest must exceed
    the Gaussian window): 5 at 256 px, 3 at 64 px, 2 at 32 px."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and (kernel_size - 1) * 2**scales < side:
        scales += 1
    return scales


def diversity(images: torch.Tensor, max_pairs: int = 500, seed: int = 0) -> dict[str, float | int]:
    """Mean MS-SSIM over up to ``max_pairs`` random pairs of distinct images ``[N, 1, S, S]`` in [0, 1]."""
    n = len(images)
    if n < 2:
        return {"ms_ssim": float("nan"), "n_pairs": 0, "scales": 0}
    rng = np.random.default_rng(seed)
    all_pairs = n * (n - 1) // 2
    if all_pairs <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n  # never i itself
    scales = ms_ssim_scales(images.shape[-1])
    values = []
    for start in range(0, len(i), 64):
        a, b = images[i[start : start + 64]].float(), images[j[start : start + 64]].float()
        values.append(
            multiscale_structural_similarity_index_measure(
                a, b, data_range=1.0, betas=MS_SSIM_WEIGHTS[:scales], normalize="relu", reduction="none"
            )
        )
    return {"ms_ssim": float(torch.cat(values).mean()), "n_pairs": len(i), "scales": scales}


def nearest_neighbours(
    synthetic: torch.Tensor, synthetic_mirrored: torch.Tensor, train: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic feature row, the highest cosine similarity to a training row (over the image and its
    mirror image) and the index of that training image.

    Features are centred on the training mean first: pooled network features share a large common component
    that would put every cosine near 1; centred, a copy still scores 1 and unrelated images spread out.
    """
    if len(train) == 0:
        raise ValueError("the nearest-neighbour check needs training features")
    centre = train.float().mean(dim=0)
    t = torch.nn.functional.normalize(train.float() - centre, dim=1)
    sims = torch.stack(
        [
            torch.nn.functional.normalize(s.float() - centre, dim=1) @ t.T
            for s in (synthetic, synthetic_mirrored)
        ]
    ).amax(dim=0)
    best, index = sims.max(dim=1)
    return best.numpy().astype(np.float64), index.numpy()


def save_gallery(
    synthetic: np.ndarray,
    train: np.ndarray,
    similarity: np.ndarray,
    nearest: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    k: int = 8,
    feature_name: str = "",
    train_names: Sequence[str] | None = None,
) -> Path:
    """PNG of the ``k`` synthetic images most similar to a training image, each above its nearest training image.

    Args:
        synthetic, train: float ``[N, S, S]`` / ``[M, S, S]`` images in [0, 1].
        similarity, nearest: :func:`nearest_neighbours` output.
        names, train_names: the synthetic pairs' and the training images' names (default: indices).
    """
    order = np.argsort(-similarity)[:k]
    fig = Figure(figsize=(1.6 * max(len(order), 1), 3.6), layout="constrained")
    axes = fig.subplots(2, max(len(order), 1), squeeze=False)
    for col, idx in enumerate(order):
        axes[0, col].imshow(synthetic[idx], cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(f"{names[idx]}\n{similarity[idx]:.3f}", fontsize=7)
        axes[1, col].imshow(train[nearest[idx]], cmap="gray", vmin=0, vmax=1)
        near = int(nearest[idx])
        axes[1, col].set_title(train_names[near] if train_names else f"train #{near}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(
        f"most similar synthetic (top) / nearest training image (bottom), cosine in {feature_name}",
        fontsize=8,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def summary_row(figures: dict[str, Any]) -> dict[str, Any]:
    """The handful of fidelity figures a table row shows: KID vs the training images, pair agreement, diversity."""
    realism = figures.get("realism", {}).get("train", {})
    agreement = figures.get("agreement", {})
    return {
        "kid_train": realism.get("kid"),
        "kid_train_std": realism.get("kid_std"),
        "pair_agreement": agreement.get("synthetic"),
        "agreement_ceiling": agreement.get("ceiling"),
        "agreement_floor": agreement.get("floor"),
        "agreement_normalised": agreement.get("normalised"),
        "ms_ssim": figures.get("diversity", {}).get("synthetic", {}).get("ms_ssim"),
    }
