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
    """Wrap every attention block's ``attn.qkv`` ``nn.Linear`` of an image encoder (SAM's ``ImageEncoderViT``,
    LiteMedSAM's TinyViT) in :class:`LoRALinear`; returns the count.

    Only the adapters are trainable afterwards (the wrapped weights are frozen). Load pretrained weights
    before adding adapters: the wrapped weight's key becomes ``...attn.qkv.base.weight``.
    """
    attentions = [m for _, m in encoder.named_modules() if isinstance(getattr(m, "qkv", None), nn.Linear)]
    for attn in attentions:
        attn.qkv = LoRALinear(attn.qkv, rank=rank, alpha=alpha)
    if not attentions and not any(isinstance(m, LoRALinear) for m in encoder.modules()):
        raise ValueError(f"{type(encoder).__name__} has no attention qkv projection to adapt with LoRA")
    return len(attentions)


def merge_lora(state: dict[str, torch.Tensor], alpha: float | None = None) -> dict[str, torch.Tensor]:
    """A state dict with :class:`LoRALinear` entries folded back into plain ``nn.Linear`` weights.

    ``...qkv.base.weight + (alpha / rank) * lora_b @ lora_a`` becomes ``...qkv.weight`` (``base.bias`` becomes
    ``bias``; ``alpha`` None means ``rank``, as in :class:`LoRALinear`), so the result has the keys of the
    unadapted model: what ``segment-anything`` loads.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        if ".base." in key:
            prefix, name = key.rsplit(".base.", 1)
            if name == "weight":
                a, b = state[f"{prefix}.lora_a"], state[f"{prefix}.lora_b"]
                scaling = (alpha if alpha is not None else a.shape[0]) / a.shape[0]
                value = value + (scaling * (b.float() @ a.float())).to(value.dtype)
            key = f"{prefix}.{name}"
        out[key] = value
    return out
