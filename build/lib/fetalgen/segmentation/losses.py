"""Training loss (Dice + BCE on mask logits) and batched hard Dice/IoU for validation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masks ``[B, 1, H, W]`` in [0, 1] -> ``[B, 1, size, size]``: pixel-coverage fractions when shrinking
    (``area``), bilinear when growing. Soft targets keep the boundary information of the full-size mask."""
    if masks.shape[-2:] == (size, size):
        return masks.float()
    mode = "area" if size < masks.shape[-1] else "bilinear"
    return F.interpolate(masks.float(), size=(size, size), mode=mode).clamp_(0.0, 1.0)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` per sample with ``p = sigmoid(logits)``, batch mean.

    Args:
        logits: ``[B, 1, h, w]`` mask logits.
        target: ``[B, 1, h, w]`` in [0, 1].
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return (1.0 - dice).mean()


class SegmentationLoss(nn.Module):
    """``dice_weight * soft Dice + bce_weight * BCE`` on mask logits at a set resolution.

    Args:
        dice_weight, bce_weight: weights of the two terms.
        resolution: side of the square on which the loss is computed; None: the logits' own size (SAM's
            low-res decoder output, ``L / 4``). Logits of another size are resized bilinearly, the target with
            :func:`resize_masks`. Working images are square, so the low-res frame is the image frame.
    """

    def __init__(
        self, dice_weight: float = 1.0, bce_weight: float = 1.0, resolution: int | None = None
    ) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight, self.resolution = dice_weight, bce_weight, resolution

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of logits ``[B, 1, h, w]`` against masks ``[B, 1, H, W]`` in {0, 1}; returns (total, parts)."""
        size = self.resolution or logits.shape[-1]
        if logits.shape[-2:] != (size, size):
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        target = resize_masks(target, size)
        dice = soft_dice_loss(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        return self.dice_weight * dice + self.bce_weight * bce, {"dice": dice, "bce": bce}


def hard_dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Dice and IoU of bool masks ``[B, ...]`` (both empty -> 1, as ``fetalgen.metrics.overlap``)."""
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter = (p & t).sum(1).float()
    total = (p.sum(1) + t.sum(1)).float()
    union = (p | t).sum(1).float()
    dice = torch.where(total > 0, 2.0 * inter / total.clamp(min=1), torch.ones_like(total))
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return dice, iou
