"""LoRA adapters on the image encoder's attention ``qkv`` projections, through peft (``pip install -e .[lora]``).

peft wraps each ``attn.qkv`` ``nn.Linear`` (SAM's ``ImageEncoderViT``, LiteMedSAM's TinyViT) in its own
``lora.Linear``: ``qkv(x) = W x + b + (alpha / r) * B A x``, ``B`` zero at the start, so an adapted encoder computes
exactly what the original does until ``B`` is trained. A fine-tune checkpoint stores peft's keys
(``...attn.qkv.base_layer.weight``, ``...qkv.lora_A.default.weight``, ``...qkv.lora_B.default.weight``);
:func:`merge_lora` folds them into the plain ``segment-anything`` keys for export and serving.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TARGET_MODULES = r".*attn\.qkv"  # peft matches the whole module name: every attention block's qkv projection
ADAPTER = "default"  # peft's adapter name, part of every stored key
_BASE, _A, _B = ".base_layer.", f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # an extra: only LoRA fine-tuning needs it
        raise ImportError(
            "model.sam.trainable=lora needs peft: pip install -e .[lora] (or train decoder / decoder_prompt)"
        ) from err
    return peft


def add_lora(encoder: nn.Module, rank: int = 4, alpha: float | None = None) -> int:
    """Add peft LoRA adapters of ``rank`` (scaling ``alpha / rank``; ``alpha`` None means ``rank``) to every
    ``attn.qkv`` of an image encoder, in place; returns how many were adapted.

    Only the adapters are trainable afterwards (peft freezes the rest of the encoder). Load pretrained weights
    before adding adapters: the wrapped weight's key becomes ``...attn.qkv.base_layer.weight``.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not any(isinstance(getattr(m, "qkv", None), nn.Linear) for m in encoder.modules()):
        raise ValueError(f"{type(encoder).__name__} has no attention qkv projection to adapt with LoRA")
    peft = _peft()
    config = peft.LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha if alpha is not None else rank),
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
    )
    peft.inject_adapter_in_model(config, encoder, adapter_name=ADAPTER)
    return sum(isinstance(m, peft.tuners.lora.LoraLayer) for m in encoder.modules())


def merge_lora(state: dict[str, torch.Tensor], alpha: float | None = None) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA entries folded back into plain ``nn.Linear`` weights.

    ``...qkv.base_layer.weight + (alpha / rank) * lora_B @ lora_A`` becomes ``...qkv.weight`` (``base_layer.bias``
    becomes ``bias``; ``alpha`` None means ``rank``, as in :func:`add_lora`): what peft's own ``merge()`` computes
    (tested), on stored tensors, so the result has the keys of the unadapted model that ``segment-anything`` loads.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((_A, _B)):
            continue
        if _BASE in key:
            prefix, name = key.split(_BASE, 1)
            if name == "weight":
                a, b = state[prefix + _A], state[prefix + _B]
                scaling = (alpha if alpha is not None else a.shape[0]) / a.shape[0]
                value = value + (scaling * (b.float() @ a.float())).to(value.dtype)
            key = f"{prefix}.{name}"
        out[key] = value
    return out


def has_lora(state: dict[str, Any]) -> bool:
    """Whether a state dict holds peft LoRA adapters."""
    return any(k.endswith(_A) for k in state)
