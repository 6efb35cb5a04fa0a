"""One rule for every derived random stream: a stream is named by a tuple of non-negative integers (the run's
seed first), and numpy's ``SeedSequence`` of that tuple seeds it.

    seeded_rng(seed, r, name_key(case))  # numpy Generator: the box of repetition r of a case
    derive_seed(seed, index)             # an integer seed, for torch.Generator or albumentations: synthetic pair i
    torch_generator(seed, epoch)         # a torch.Generator: the training order of an epoch

Root seeds (``seed_everything(cfg.seed)``, a model's init seed) are used as they are; everything drawn per
case, pair, repetition, view, step or epoch comes from here, so a stream depends on its name only, never on
how much was drawn before it. Case names enter through :func:`name_key`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def name_key(name: str) -> int:
    """A 64-bit integer fixed by a name (Python's ``hash`` of a string changes from process to process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _sequence(keys: tuple[int, ...]) -> np.random.SeedSequence:
    if not keys:
        raise ValueError("a random stream needs at least one key (the seed)")
    return np.random.SeedSequence([int(k) for k in keys])


def seeded_rng(*keys: int) -> np.random.Generator:
    """The numpy generator of the stream ``keys`` (``seeded_rng(s)`` equals ``np.random.default_rng(s)``)."""
    return np.random.default_rng(_sequence(keys))


def derive_seed(*keys: int) -> int:
    """The integer seed of the stream ``keys``: 63 bits, so it fits ``torch.Generator.manual_seed``, numpy and
    albumentations alike."""
    return int(_sequence(keys).generate_state(1, dtype=np.uint64)[0] >> 1)


def torch_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator("cpu").manual_seed(derive_seed(*keys))
