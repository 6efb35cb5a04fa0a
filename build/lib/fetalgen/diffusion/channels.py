"""Pack an image and its mask into the diffusion model's two channels, and back.

Tensor contract (BCHW): channel 0 = image, channel 1 = mask, both in [-1, 1].
Pure torch; no Lightning.
"""

from __future__ import annotations

import torch

IMAGE_CHANNEL, MASK_CHANNEL = 0, 1


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] to [-1, 1]."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] to [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def pack(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stack image and mask into the model's input.

    Args:
        image: float [B,1,H,W] in [0, 1].
        mask: [B,1,H,W] in {0, 1} (float or bool).

    Returns:
        float [B,2,H,W] in [-1, 1]: channel 0 the image, channel 1 the mask (-1 background, +1 head).
    """
    if image.ndim != 4 or image.shape[1] != 1 or mask.shape != image.shape:
        raise ValueError(
            f"pack expects image and mask [B,1,H,W] of one shape, got {image.shape}, {mask.shape}"
        )
    return torch.cat([to_signed(image.float()), to_signed(mask.float())], dim=1)


def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a model sample into image and mask channel.

    Args:
        x: float [B,2,H,W], nominally in [-1, 1].

    Returns:
        ``(image, mask_channel)``: image float [B,1,H,W] in [0, 1] (clamped); mask channel float [B,1,H,W]
        clamped to [-1, 1], still continuous (binarise it with ``postprocess.clean_mask``).
    """
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"unpack expects [B,2,H,W], got {tuple(x.shape)}")
    return to_unit(x[:, IMAGE_CHANNEL : IMAGE_CHANNEL + 1]), x[:, MASK_CHANNEL : MASK_CHANNEL + 1].clamp(
        -1.0, 1.0
    )
