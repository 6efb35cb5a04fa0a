"""The training order: shuffled by ``(seed, epoch)`` and resumable mid-epoch from a Lightning checkpoint.

A resumed run then sees exactly the batches an uninterrupted run would have seen: the epoch's order is a
function of the seed and the epoch number (not of how many epochs this process has run), and the loader's
``state_dict`` (saved by Lightning in every checkpoint) says how many batches of the epoch were already used
(none to skip when the checkpoint was written after an epoch's last batch: Lightning starts the next epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from fetalgen.utils.seeds import torch_generator


class EpochShuffle(Sampler[int]):
    """A random permutation of ``range(n)`` fixed by ``(seed, epoch)``; Lightning calls :meth:`set_epoch`."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.skip = 0  # indices of the current epoch already used before a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch_generator(self.seed, self.epoch)).tolist()
        skip, self.skip = self.skip, 0
        yield from order[skip:]


class ResumableLoader(DataLoader):
    """A DataLoader whose ``state_dict`` records the epoch and the batches used in it (Lightning's ``_Stateful``
    protocol); :meth:`load_state_dict` makes the next epoch iterator start after them.

    Use with an :class:`EpochShuffle` sampler (or any sampler without state, e.g. sequential). Under DDP,
    Lightning swaps in its distributed sampler (seeded per epoch, no skip): a resume is exact at epoch boundaries.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches_done = getattr(self, "resume_batches", 0)
        self.resume_batches = 0
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches_done": getattr(self, "batches_done", 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["batches_done"]) >= len(self):
            # Saved after the epoch's last batch: Lightning counts that epoch as done and starts the next one
            # (setting its epoch on the sampler); skipping here would empty it and shift every later order.
            return
        self.resume_batches = int(state["batches_done"])
        if isinstance(self.sampler, EpochShuffle):
            self.sampler.set_epoch(int(state["epoch"]))
            self.sampler.skip = self.resume_batches * int(self.batch_size or 1)
