"""The reference segmenter of the judge: prompt-free head segmentation trained on real pairs only.

A small convolutional network (a few lines of ``torch.nn``; diffusers' UNet2DModel as a segmenter trained ~3x
slower on a CPU for ~0.02-0.04 more Dice), trained from scratch with Dice + BCE and mirror flips: it needs no
weights from outside and no box, so it cannot be steered by the mask it judges. Its initialisation and batches
follow the project's seed rule (:mod:`fetalgen.utils.seeds`); the global random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fetalgen.utils.seeds import derive_seed, name_key, torch_generator

STREAM = name_key("reference_segmenter")


def segmenter_net(width: int = 16) -> nn.Sequential:
    """The reference segmenter's network: conv blocks at 1/1, 1/2 and 1/4 resolution (dilated at the coarsest,
    for a receptive field of ~70 px), upsampled back to full resolution, 1 logit per pixel."""

    def block(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, width), nn.MaxPool2d(2),
        *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 2 * width, 2), *block(2 * width, 2 * width, 4),
        nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
        *block(2 * width, width), nn.Conv2d(width, 1, 1),
    )  # fmt: skip


class ReferenceSegmenter:
    """Prompt-free head segmentation for judging pairs (the module doc); :meth:`fit` on real pairs first."""

    def __init__(self, size: int, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if size % 4:
            raise ValueError(f"the reference segmenter needs an image side divisible by 4, got {size}")
        with torch.random.fork_rng(
            devices=[]
        ):  # the initialisation from the seed rule, the global state untouched
            torch.manual_seed(derive_seed(seed, STREAM))
            self.net = segmenter_net().to(device)
        self.seed, self.device = seed, torch.device(device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 1, S, S]`` images in [0, 1] -> mask logits ``[B, 1, S, S]``."""
        return self.net(images.to(self.device) * 2 - 1)

    def fit(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        steps: int = 300,
        batch_size: int = 16,
        lr: float = 2e-3,
        on_step: Callable[[], None] | None = None,
    ) -> list[float]:
        """Train on real pairs ``[M, 1, S, S]`` (images in [0, 1], masks 0/1); returns the loss per step.
        ``on_step`` is called after each step (a progress bar)."""
        generator = torch_generator(self.seed, STREAM)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr)
        losses = []
        self.net.train()
        for _ in range(steps):
            pick = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
            x, y = images[pick].float(), masks[pick].float()
            flip = torch.rand(len(pick), generator=generator) < 0.5
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            logits = self.logits(x)
            y = y.to(self.device)
            prob = logits.sigmoid()
            soft_dice = 1 - (2 * (prob * y).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step()
        self.net.eval()
        return losses

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Bool masks ``[N, S, S]`` of images ``[N, 1, S, S]``."""
        out = [self.logits(images[k : k + batch_size].float()) > 0 for k in range(0, len(images), batch_size)]
        return torch.cat(out)[:, 0].cpu().numpy() if out else np.zeros((0, *images.shape[-2:]), bool)
