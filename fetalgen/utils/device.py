"""The torch device a setting names."""

from __future__ import annotations

import torch


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) -> the first CUDA device if there is one, else the CPU; anything else as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
