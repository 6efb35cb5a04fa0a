"""Masks from a fine-tuned SAM on working images: given boxes, or with the automatic prompt (no human input).

One encoder pass per image (:meth:`SamBoxPredictor.embed`); every box of every image of a batch, and every round
of the automatic prompt, goes through the mask decoder from those embeddings.

The automatic prompt (``auto``): the whole-image box gives a first mask; then, for ``rounds`` rounds, the box of
that mask's largest region, widened by the margin the model was trained with (half the largest training jitter,
none for ``tight`` training), gives the next mask. An image where a round finds nothing keeps its previous box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from fetalgen.data.provenance import CHECKPOINT_KEY as PROVENANCE_KEY
from fetalgen.segmentation.cache import encode_in_chunks
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.preprocess import logits_to_working, to_encoder_input
from fetalgen.segmentation.prompts import full_box, tight_box
from fetalgen.utils.checkpoints import load_checkpoint, run_config
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


class SamBoxPredictor:
    """Box-prompted (and automatically prompted) masks of a :class:`SamFinetuneModule`.

    The embedding cache is bypassed (images are seen once); ``encoded`` counts encoded images.
    """

    def __init__(
        self,
        module: SamFinetuneModule,
        device: torch.device | str | None = None,
        encode_batch_size: int | None = 2,
    ) -> None:
        self.module = module.eval()
        if device is not None:
            self.module.to(device)
        self.encoded = 0
        self.encode_batch_size = (
            encode_batch_size  # images per encoder call (peak memory; see encode_in_chunks)
        )

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> Embedded:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> their embeddings (one encoder pass each)."""
        sam = self.module.sam
        images = images.to(self.module.device)
        self.encoded += len(images)
        embeddings = encode_in_chunks(
            lambda x: sam.image_encoder(to_encoder_input(sam, x)), images, self.encode_batch_size
        )
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

    @property
    def threshold(self) -> float:
        """The logit above which a pixel is in the mask (SAM's ``mask_threshold``)."""
        return float(self.module.sam.mask_threshold)

    def predict(self, embedded: Embedded, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` -> bool masks ``[R, B, S, S]`` (:meth:`logits` thresholded)."""
        return self.logits(embedded, boxes) > self.threshold

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """:meth:`predict` on freshly embedded ``images``."""
        return self.predict(self.embed(images), boxes)

    def auto_margin(self, side: int) -> float:
        """Pixels added around a mask's box in the automatic prompt, at working side ``side``."""
        hp = self.module.hparams
        if hp.train_prompt == "tight":
            return 0.0
        return 0.5 * hp.max_jitter_px * side / hp.jitter_ref_size

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


class LoadedModel(NamedTuple):
    """A module to predict with and, when it comes from a ``fetalgen-finetune`` checkpoint, the run's record."""

    module: SamFinetuneModule
    config: dict[str, Any] | None  # the resolved training config
    provenance: dict[str, Any] | None  # {"training_cases", "generator_cases"} (fetalgen.data.provenance)


def load_module(model_cfg: DictConfig | None, ckpt_path: str | Path | None = None) -> LoadedModel:
    """The module to predict with, and the training run's config and provenance when it comes from a checkpoint.

    ``ckpt_path``: a ``fetalgen-finetune`` checkpoint (``.ckpt``); the model is rebuilt from the config saved
    in it (else from ``model_cfg``) with random init and no cache, then its weights loaded. Without
    ``ckpt_path``, ``model_cfg`` is built as is (raw SAM/MedSAM weights via ``model.sam.checkpoint``, or a
    random ``sam/tiny``).
    """
    if ckpt_path is None:
        if model_cfg is None:
            raise ValueError("no model: give ckpt_path or a model config")
        return LoadedModel(hydra.utils.instantiate(model_cfg), None, None)
    path = Path(ckpt_path)
    checkpoint = load_checkpoint(path, "finetune")
    train_cfg = run_config(checkpoint)
    if train_cfg is None and model_cfg is None:
        raise ValueError(f"{path} carries no config: give a model config (model=sam/...) matching it")
    cfg = OmegaConf.create(
        train_cfg["model"] if train_cfg else OmegaConf.to_container(model_cfg, resolve=True)
    )
    with open_dict(cfg):
        cfg.sam.checkpoint = None  # the weights come from the checkpoint
        cfg.cache = None
    module = hydra.utils.instantiate(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    log.info("Loaded fine-tuned SAM from %s", path)
    return LoadedModel(module, train_cfg, checkpoint.get(PROVENANCE_KEY))
