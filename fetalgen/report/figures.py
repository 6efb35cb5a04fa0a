"""Pictures of image/mask pairs: contours drawn over images, grids of pairs (pure numpy + OpenCV)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch.utils.data import Dataset

CONTOUR_RGB = (255, 64, 64)


def overlay_contour(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = CONTOUR_RGB
) -> np.ndarray:
    """The mask's outer contour drawn in colour over a grayscale image.

    Args:
        image: uint8 HxW.
        mask: bool HxW.
        color: RGB of the contour.

    Returns:
        uint8 HxWx3 RGB.
    """
    rgb = np.repeat(image[..., None], 3, axis=2).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, color, thickness=1)
    return rgb


def pair_grid(
    images: np.ndarray, masks: np.ndarray, ncols: int | None = None, min_tile: int = 128
) -> np.ndarray:
    """A grid of pairs, each shown as ``image | image with the mask contour``.

    Args:
        images: float [N,H,W] in [0, 1].
        masks: bool [N,H,W].
        ncols: pairs per row (default: about sqrt(N)).
        min_tile: small images are enlarged (nearest neighbour, integer factor) to at least this side.

    Returns:
        uint8 RGB image [rows * (s*H + 2), ncols * 2 * (s*W + 2), 3] on a black background (2-px gaps).
    """
    n, h, w = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    scale = max(1, math.ceil(min_tile / max(h, w)))
    th, tw = h * scale + 2, w * scale + 2
    grid = np.zeros((nrows * th, ncols * 2 * tw, 3), dtype=np.uint8)
    for i in range(n):
        image = np.round(np.clip(images[i], 0, 1) * 255).astype(np.uint8)
        image = cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        mask = (
            cv2.resize(masks[i].astype(np.uint8), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) > 0
        )
        r, c = divmod(i, ncols)
        y, x = r * th + 1, c * 2 * tw + 1
        grid[y : y + h * scale, x : x + w * scale] = image[..., None]
        grid[y : y + h * scale, x + tw : x + tw + w * scale] = overlay_contour(image, mask)
    return grid


def save_case_figure(
    rows: pd.DataFrame, dataset: Dataset, predictions: Mapping[str, np.ndarray], path: str | Path
) -> Path | None:
    """PNG of the best, median and worst image by SAM Dice (repetition 0): image, box, predicted contour (red),
    true contour (green). ``predictions``: the repetition-0 masks by case name (nothing is predicted again).
    Returns the path, or None when there are no rows."""
    sam = rows[(rows["method"] == "sam") & (rows["repetition"] == 0)].sort_values("dice", ascending=False)
    if sam.empty:
        return None
    picks = {"best": sam.iloc[0], "median": sam.iloc[len(sam) // 2], "worst": sam.iloc[-1]}
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    for ax, (label, row) in zip(fig.subplots(1, 3), picks.items(), strict=True):
        item = dataset[int(row["index"])]
        pred = predictions[row["name"]]
        truth = item["mask"][0].numpy() > 0.5
        ax.imshow(item["image"][0].numpy(), cmap="gray", vmin=0, vmax=1)
        x0, y0, x1, y1 = (float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.2))
        for mask, color in ((truth, "lime"), (pred, "red")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2)
        ax.set_title(f"{label}: {row['name']}\nDice {row['dice']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("box prompt (yellow), SAM (red), ground truth (green)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
