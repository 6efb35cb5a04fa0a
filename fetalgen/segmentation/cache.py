"""Image-embedding cache: the frozen encoder runs once per distinct input image, not once per step.

The ViT-B encoder costs about 200x the mask decoder per image on a CPU, so with the encoder frozen every epoch
after the first is nearly free. An entry's key is the sha256 of

- the working image tensor (``[1, S, S]`` float32, before SAM's resize/normalise/pad, which are deterministic
  given the rest of the key, so keys do not depend on the device that computed the encoder input),
- the encoder identity: a hash of the encoder's state dict (so a checkpoint, a random init and a fine-tuned
  encoder are told apart), the encoder input size and SAM's pixel mean/std,
- the storage dtype.

With augmentation, the data layer's seeded views (``data.augment_views``: ``K`` fixed views per pair, see
``fetalgen.data.dataset.PairDataset``) are repeated images like any other: at most ``N * K`` embeddings are ever
computed, each the first time its view is drawn. The cache needs to know nothing about them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam
from torch import nn

from fetalgen.utils.files import atomic_write

log = logging.getLogger(__name__)

STORAGES = ("memory", "disk")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _update(h: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes into a hash."""
    t = tensor.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(tensor.shape)}".encode())
    h.update(t.view(torch.uint8).numpy())


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of an encoder's state dict (names, dtypes, shapes, bytes): its identity for the cache."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        _update(h, tensor)
    return h.hexdigest()


class EmbeddingCache:
    """Content-keyed store of image embeddings ``[C, h, w]``, in memory (a dict) or on disk (``.pt`` files).

    Args:
        storage: ``"memory"`` or ``"disk"``.
        cache_dir: folder of the disk cache (shared safely between runs and ranks: keys are content hashes,
            files are written atomically).
        dtype: storage dtype (``float16`` halves memory and disk; ``float32`` stores the encoder output exactly).

    Call :meth:`bind` with the SAM model before use.
    """

    def __init__(
        self,
        storage: str = "memory",
        cache_dir: str | Path | None = None,
        dtype: str = "float16",
        encode_batch_size: int | None = None,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown cache storage {storage!r}; choose one of {', '.join(STORAGES)}")
        if storage == "disk" and cache_dir is None:
            raise ValueError("a disk cache needs cache_dir")
        if dtype not in DTYPES:
            raise ValueError(f"unknown cache dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.storage, self.dtype = storage, DTYPES[dtype]
        self.encode_batch_size = (
            encode_batch_size  # images per encoder call on a miss (None: the whole batch)
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.namespace: str | None = None
        self.hits = self.misses = 0
        self._memory: dict[str, torch.Tensor] = {}

    def bind(self, sam: Sam) -> EmbeddingCache:
        """Fix the encoder identity (state-dict hash, input size, pixel mean/std); returns ``self``."""
        h = hashlib.sha256(encoder_fingerprint(sam.image_encoder).encode())
        h.update(f"{sam.image_encoder.img_size}|{self.dtype}".encode())
        _update(h, sam.pixel_mean.float())
        _update(h, sam.pixel_std.float())
        self.namespace = h.hexdigest()
        return self

    def key(self, image: torch.Tensor) -> str:
        """Key of one working image ``[1, S, S]``."""
        if self.namespace is None:
            raise RuntimeError("EmbeddingCache.bind(sam) must be called before use")
        h = hashlib.sha256(self.namespace.encode())
        _update(h, image.float())
        return h.hexdigest()

    def __len__(self) -> int:
        if self.storage == "memory":
            return len(self._memory)
        return sum(1 for _ in self.cache_dir.glob("*/*.pt")) if self.cache_dir.is_dir() else 0

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.pt"

    def _get(self, key: str, device: torch.device) -> torch.Tensor | None:
        if self.storage == "memory":
            return self._memory.get(key)
        path = self._path(key)
        return torch.load(path, map_location=device, weights_only=True) if path.is_file() else None

    def _put(self, key: str, embedding: torch.Tensor) -> None:
        if self.storage == "memory":
            self._memory[key] = embedding
        else:
            value = embedding.cpu().clone()
            atomic_write(self._path(key), lambda p: torch.save(value, p))

    def embed(self, images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Embeddings of working images ``[B, 1, S, S]``: cached ones loaded, the others computed and stored.

        Args:
            images: the working images (the key's content).
            encode: images ``[b, 1, S, S]`` -> embeddings ``[b, C, h, w]`` (run without gradient here).

        Returns:
            float32 ``[B, C, h, w]`` on ``images.device``, always the stored (dtype-rounded) value, so a hit
            and a miss give the same result.
        """
        keys = [self.key(image) for image in images]
        found = {k: self._get(k, images.device) for k in dict.fromkeys(keys)}
        todo = [k for k, v in found.items() if v is None]
        if todo:
            with torch.no_grad():
                computed = encode_in_chunks(
                    encode, images[[keys.index(k) for k in todo]], self.encode_batch_size
                )
            for k, embedding in zip(todo, computed, strict=True):
                found[k] = embedding.detach().to(self.dtype)
                self._put(k, found[k])
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        # Cast before stacking: under CPU autocast (bf16-mixed), stacking float16 tensors is an error.
        return torch.stack([found[k].to(device=images.device, dtype=torch.float32) for k in keys])


def encode_in_chunks(
    encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """``encode(images)`` run ``chunk`` images at a time (None: all at once). The encoder treats images
    independently, so only the peak memory changes: ViT-B at 1024 px holds ~2.3 GiB of activations per image."""
    if not chunk or len(images) <= chunk:
        return encode(images)
    return torch.cat([encode(images[k : k + chunk]) for k in range(0, len(images), chunk)])
