"""Masks from a fine-tuned SAM on working images: given boxes, or with the automatic prompt (no human input).

One encoder pass per image (:meth:`SamBoxPredictor.embed`); every box of every image of a batch, and every round
of the automatic prompt, goes through the mask decoder from those embeddings.

The automatic prompt (``auto``): the whole-image box gives a first mask; then, for ``rounds`` rounds, the box of
that mask's largest region, widened by the margin the model was trained with (half the largest training jitter,
none for ``tight`` training), gives the next mask. An image where a round finds nothing keeps its previous box.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fetalgen.segmentation.cache import EmbeddingCache, encode_in_chunks
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.preprocess import logits_to_working, to_encoder_input
from fetalgen.segmentation.prompts import full_box, tight_box
from fetalgen.segmentation.stored import rebuild_module
from fetalgen.utils.checkpoints import CheckpointError, RunCheckpoint, rebuild
from fetalgen.utils.masks import largest_component

log = logging.getLogger(__name__)

AUTO_ROUNDS = 2


@dataclass
class Embedded:
    """One batch of working images after the encoder: embeddings ``[B, C, E, E]`` and the working size."""

    embeddings: torch.Tensor
    hw: tuple[int, int]

    def __len__(self) -> int:
        return len(self.embeddings)

    def select(self, indices: list[int]) -> Embedded:
        """The embeddings of the images at ``indices`` only."""
        return Embedded(self.embeddings[indices], self.hw)


class BoxPrompting(ABC):
    """The prompting of a box predictor, whatever runs the model (PyTorch here, onnxruntime in
    :mod:`fetalgen.segmentation.onnx_predictor`): a backend gives ``embed``, ``logits``, ``threshold`` and
    ``auto_margin``; the thresholded masks and the automatic prompt (module doc) are the same for every one."""

    threshold: float  # the logit above which a pixel is in the mask

    @abstractmethod
    def embed(self, images: torch.Tensor) -> Embedded:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> their embeddings."""

    @abstractmethod
    def logits(self, embedded: Embedded, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` (XYXY, working pixels; box ``[r, b]`` on image ``b``) -> logits ``[R, B, S, S]``."""

    @abstractmethod
    def auto_margin(self, side: int) -> float:
        """Pixels added around a mask's box in the automatic prompt, at working side ``side``."""

    def predict(self, embedded: Embedded, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` -> bool masks ``[R, B, S, S]`` (:meth:`logits` thresholded)."""
        return self.logits(embedded, boxes) > self.threshold

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """:meth:`predict` on freshly embedded ``images``."""
        return self.predict(self.embed(images), boxes)

    def auto_boxes(self, embedded: Embedded, rounds: int = AUTO_ROUNDS) -> np.ndarray:
        """The boxes ``[B, 4]`` the automatic prompt (module doc) settles on, from the whole-image box."""
        h, w = embedded.hw
        boxes = np.stack([full_box((h, w))] * len(embedded))
        margin = self.auto_margin(max(h, w))
        for _ in range(rounds):
            for i, mask in enumerate(self.predict(embedded, torch.from_numpy(boxes)[None])[0]):
                if mask.any():
                    box = tight_box(largest_component(mask)) + np.array([-1, -1, 1, 1]) * margin
                    boxes[i] = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        return boxes.astype(np.float32)

    def auto(self, embedded: Embedded, rounds: int = AUTO_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
        """The automatic prompt: bool masks ``[B, S, S]`` and the boxes ``[B, 4]`` that gave them."""
        boxes = self.auto_boxes(embedded, rounds)
        return self.predict(embedded, torch.from_numpy(boxes)[None])[0], boxes


class SamBoxPredictor(BoxPrompting):
    """Box-prompted (and automatically prompted) masks of a :class:`SamFinetuneModule`.

    Images are encoded afresh (each is seen once), except through the module's embedding cache when that is a disk
    cache: content-keyed by the encoder's weights, it then serves every run that shares the encoder (a frozen
    pretrained one: the zero-shot model and every decoder fine-tune of a sweep), or through the ``cache`` given.
    ``encoded`` counts images asked for.
    """

    def __init__(
        self,
        module: SamFinetuneModule,
        device: torch.device | str | None = None,
        encode_batch_size: int | None = 2,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.module = module.eval()
        if device is not None:
            self.module.to(device)
        self.encoded = 0
        self.encode_batch_size = (
            encode_batch_size  # images per encoder call (peak memory; see encode_in_chunks)
        )
        if (
            cache is None
        ):  # the module's own, when it is shared on disk (a memory one only holds training images)
            own = getattr(module, "cache", None)
            cache = own if own is not None and own.storage == "disk" else None
        self.cache = cache

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> Embedded:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> their embeddings (one encoder pass each, or the cache's)."""
        sam = self.module.sam
        images = images.to(self.module.device)
        self.encoded += len(images)

        def encode(x: torch.Tensor) -> torch.Tensor:
            return sam.image_encoder(to_encoder_input(sam, x))

        if self.cache is not None:
            if self.cache.namespace is None:
                self.cache.bind(sam)
            embeddings = self.cache.embed(images, encode)
        else:
            embeddings = encode_in_chunks(encode, images, self.encode_batch_size)
        return Embedded(embeddings, tuple(images.shape[-2:]))

    @torch.no_grad()
    def logits(self, embedded: Embedded, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` (XYXY, working pixels; box ``[r, b]`` on image ``b``) -> mask logits ``[R, B, S, S]``
        (float32, on the working image; a mask where > ``sam.mask_threshold``), in one batched decoder call."""
        sam, hw = self.module.sam, embedded.hw
        reps, batch = boxes.shape[:2]
        flat = boxes.reshape(reps * batch, 4).to(embedded.embeddings.device)  # repetition-major
        low_res = self.module.decode(embedded.embeddings.repeat(reps, 1, 1, 1), flat, hw)
        return logits_to_working(sam, low_res, hw)[:, 0].reshape(reps, batch, *hw).float().cpu().numpy()

    @torch.no_grad()
    def scored(self, embedded: Embedded, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One box ``[B, 4]`` per image -> bool masks ``[B, S, S]`` and SAM's predicted IoU of each ``[B]``."""
        hw = embedded.hw
        flat = torch.as_tensor(boxes, dtype=torch.float32).to(embedded.embeddings.device)
        low_res, iou = self.module.decode_scored(embedded.embeddings, flat, hw)
        logits = logits_to_working(self.module.sam, low_res, hw)[:, 0].float().cpu().numpy()
        return logits > self.threshold, iou.float().cpu().numpy()

    @property
    def threshold(self) -> float:
        """The logit above which a pixel is in the mask (SAM's ``mask_threshold``)."""
        return float(self.module.sam.mask_threshold)

    def auto_margin(self, side: int) -> float:
        """Pixels added around a mask's box in the automatic prompt, at working side ``side``."""
        hp = self.module.hparams
        if hp.train_prompt == "tight":
            return 0.0
        return 0.5 * hp.max_jitter_px * side / hp.jitter_ref_size


class LoadedModel(NamedTuple):
    """A module to predict with and, when it comes from a ``fetalgen-finetune`` checkpoint, the run's record."""

    module: SamFinetuneModule
    config: dict[str, Any] | None  # the resolved training config
    provenance: dict[str, Any] | None  # {"training_cases", "generator_cases"} (fetalgen.data.provenance)


class RandomWeightsError(ValueError):
    """A model without trained weights was asked for without ``allow_random_weights``."""


def require_weights(
    ckpt_path: str | Path | None, weights: str | Path | None, allow_random_weights: bool
) -> None:
    """Refuse a model without trained weights (no checkpoint, no weights file) unless explicitly allowed.

    Raises:
        RandomWeightsError: saying what to give.
    """
    if ckpt_path is None and not weights and not allow_random_weights:
        raise RandomWeightsError(
            "no trained weights: give ckpt_path=<a fetalgen-finetune .ckpt>, or raw SAM weights "
            "(model=sam/vit_b with model.sam.checkpoint=<file>, `make weights`); allow_random_weights=true "
            "runs a random-init model (its masks and measurements mean nothing: for tests only)"
        )


def load_finetuned(
    ckpt_path: str | Path, build_unrecorded: Callable[[], SamFinetuneModule] | None = None
) -> LoadedModel:
    """A ``fetalgen-finetune`` checkpoint's module with its weights, and the training run's config and provenance:
    :func:`~fetalgen.utils.checkpoints.rebuild` with its builder, :func:`sam_from_checkpoint`.

    Raises:
        CheckpointError: the file is no fine-tune checkpoint, names an unknown builder, or its weights do not fit.
        ValueError: the file carries no config and no ``build_unrecorded`` was given.
    """
    return rebuild(ckpt_path, "finetune", build_unrecorded=build_unrecorded)


def sam_from_checkpoint(
    checkpoint: RunCheckpoint, build_unrecorded: Callable[[], SamFinetuneModule] | None = None
) -> LoadedModel:
    """The builder of fine-tuned SAM: the module rebuilt from the plain values of the config saved in the file
    (:func:`~fetalgen.segmentation.stored.rebuild_module`: nothing named in the file is instantiated), its weights
    loaded. A file that carries no config (older fetalgen) needs ``build_unrecorded``: the caller's own model,
    random init, no cache."""
    path = checkpoint.path
    train_cfg = checkpoint.config
    if train_cfg is None and build_unrecorded is None:
        raise ValueError(f"{path} carries no config: give a model config (model=sam/...) matching it")
    if train_cfg is not None:
        if not isinstance(train_cfg, dict):
            raise CheckpointError(f"{path}: its stored config is not a mapping")
        module = rebuild_module(train_cfg.get("model"), path)
    else:
        module = build_unrecorded()
    try:
        module.load_state_dict(checkpoint.state_dict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes ({first})"
        ) from None
    log.info("Loaded fine-tuned SAM from %s", path)
    return LoadedModel(module, train_cfg, checkpoint.provenance)
