"""LoRA adapters on the image encoder's attention ``qkv`` projections (no peft: a few clear lines).

``qkv(x) = W x + b + (alpha / r) * B A x`` with ``A`` [r, in] random and ``B`` [out, r] zero, so an adapted
encoder computes exactly what the original does until ``B`` is trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) * B @ A``."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scaling = (alpha if alpha is not None else rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling


def add_lora(encoder: nn.Module, rank: int = 4, alpha: float | None = None) -> int:
    """Wrap every ``blocks[i].attn.qkv`` of a SAM ``ImageEncoderViT`` in :class:`LoRALinear`; returns the count.

    Only the adapters are trainable afterwards (the wrapped weights are frozen). Load pretrained weights
    before adding adapters: the wrapped weight's key becomes ``...attn.qkv.base.weight``.
    """
    count = 0
    for block in encoder.blocks:
        if not isinstance(block.attn.qkv, LoRALinear):
            block.attn.qkv = LoRALinear(block.attn.qkv, rank=rank, alpha=alpha)
            count += 1
    return count
