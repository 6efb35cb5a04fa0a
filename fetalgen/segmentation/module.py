"""LightningModule that fine-tunes SAM with box prompts drawn from the ground-truth masks.

Batches are the data layer's dicts: ``image`` float32 ``[B, 1, S, S]`` in [0, 1], ``mask`` float32
``[B, 1, S, S]`` in {0, 1}, ``name`` list of str. ``Sam.forward`` runs under ``torch.no_grad``, so the image
encoder, prompt encoder and mask decoder are called directly here (single-mask output).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningModule
from segment_anything.modeling import Sam
from torchmetrics import MeanMetric

from fetalgen.segmentation.build import count_parameters, set_trainable
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.decoder import decode_batch
from fetalgen.segmentation.losses import SegmentationLoss, hard_dice_iou
from fetalgen.segmentation.preprocess import boxes_to_encoder, logits_to_working, to_encoder_input
from fetalgen.segmentation.prompts import BOX_MODES, full_box, make_box, prompt_boxes
from fetalgen.utils.seeds import seeded_rng

log = logging.getLogger(__name__)

WHOLE_BOX_STREAM = 1  # the key of the stream that picks whole-image training prompts (full_box_share)


class SamFinetuneModule(LightningModule):
    """Fine-tune SAM (decoder, decoder + prompt encoder, or LoRA on the encoder) with Dice + BCE.

    Args:
        sam: a built SAM (``fetalgen.segmentation.build.build_sam``).
        optimizer: partial optimizer (``_partial_: true``), given the trainable parameters.
        lr_scheduler: partial LR scheduler given the optimizer, or None.
        trainable: ``decoder`` | ``decoder_prompt`` | ``lora`` (see ``build.set_trainable``).
        lora_rank, lora_alpha: LoRA settings for ``trainable="lora"``.
        dice_weight, bce_weight, loss_resolution: the loss (see ``losses.SegmentationLoss``).
        train_prompt, eval_prompt: box mode for training / validation and evaluation (``jitter``, ``tight``,
            ``full``). Training boxes come from the batch's seeded generator; a validation box is the first
            evaluation box of its image (``prompts.prompt_boxes``), so ``val/dice`` is comparable across
            validations. Testing is ``fetalgen.evaluation.engine``'s job (with the box-ellipse baseline).
        max_jitter_px, jitter_ref_size: jitter of each box side, 0..max px measured at ``jitter_ref_size``.
        full_box_share: the share of training prompts that are the whole-image box instead (the task the
            automatic prompt poses in its first round; 0: none, every arm trained as the paper does).
        cache: an :class:`EmbeddingCache` or a partial building one; ignored (with a log line) when the
            encoder trains (``lora``). It is content-keyed: with augmentation, the data layer's seeded views
            (``data.augment_views``) make the repeated images it can reuse.
        seed: seed of the prompts.
    """

    # What rebuilds it from a checkpoint (BUILDERS["finetune"] of fetalgen.utils.checkpoints).
    builder_key = "sam"

    def __init__(
        self,
        sam: Sam,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        trainable: str = "decoder",
        lora_rank: int = 4,
        lora_alpha: float | None = None,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        loss_resolution: int | None = None,
        train_prompt: str = "jitter",
        eval_prompt: str = "jitter",
        max_jitter_px: int = 20,
        jitter_ref_size: int = 256,
        full_box_share: float = 0.0,
        cache: EmbeddingCache | Callable[[], EmbeddingCache] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["sam", "optimizer", "lr_scheduler", "cache"], logger=False)
        for mode in (train_prompt, eval_prompt):
            if mode not in BOX_MODES:
                raise ValueError(f"unknown prompt mode {mode!r}; choose one of {', '.join(BOX_MODES)}")
        if not 0.0 <= full_box_share <= 1.0:
            raise ValueError(f"full_box_share must be in [0, 1], got {full_box_share}")
        self.sam = sam
        self.frozen = set_trainable(sam, trainable, lora_rank=lora_rank, lora_alpha=lora_alpha)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.loss_fn = SegmentationLoss(dice_weight, bce_weight, loss_resolution)

        self.cache: EmbeddingCache | None = None
        if cache is not None and trainable == "lora":
            log.info("trainable=lora trains the image encoder: the embedding cache is off")
        elif cache is not None:
            self.cache = cache if isinstance(cache, EmbeddingCache) else cache()

        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_dice, self.val_iou = MeanMetric(), MeanMetric()
        self.seen_names: set[str] = set()  # distinct training pairs that reached a step (all ranks after fit)

    # ----------------------------------------------------------------------------------------- model
    def train(self, mode: bool = True) -> SamFinetuneModule:
        """Switch modes, keeping the frozen parts in eval mode."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> image embeddings ``[B, C, S_e, S_e]``."""

        def encode(x: torch.Tensor) -> torch.Tensor:
            return self.sam.image_encoder(to_encoder_input(self.sam, x))

        if self.cache is not None:
            if self.cache.namespace is None:
                self.cache.bind(self.sam)
            return self.cache.embed(images, encode)
        if self.hparams.trainable == "lora":
            return encode(images)
        with torch.no_grad():
            return encode(images)

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Image embeddings ``[B, C, S_e, S_e]`` and XYXY boxes ``[B, 4]`` (working pixels) -> low-res logits
        ``[B, 1, L/4, L/4]``, box ``i`` on image ``i``, in one batched decoder call (:func:`decode_batch`)."""
        return self.decode_scored(embeddings, boxes, hw)[0]

    def decode_scored(
        self, embeddings: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode`, and SAM's own estimate of each mask's IoU ``[B]`` (its IoU head, which fine-tuning
        leaves as it was trained)."""
        sparse, dense = self.sam.prompt_encoder(
            points=None, boxes=boxes_to_encoder(self.sam, boxes, hw), masks=None
        )
        image_pe = self.sam.prompt_encoder.get_dense_pe()
        masks, iou = decode_batch(self.sam.mask_decoder, embeddings, image_pe, sparse, dense)
        return masks, iou[:, 0]

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, S, S]`` in [0, 1], boxes ``[B, 4]`` -> low-res mask logits ``[B, 1, L/4, L/4]``."""
        return self.decode(self.image_embeddings(images), boxes, tuple(images.shape[-2:]))

    def boxes(self, masks: torch.Tensor, mode: str, rngs: list[np.random.Generator]) -> torch.Tensor:
        """Box prompts ``[B, 4]`` (float32, working pixels) from masks ``[B, 1, S, S]``, one generator each."""
        arrays = masks[:, 0].detach().cpu().numpy() > 0.5
        hp = self.hparams
        boxes = [
            make_box(m, mode, r, hp.max_jitter_px, hp.jitter_ref_size)
            for m, r in zip(arrays, rngs, strict=True)
        ]
        return torch.from_numpy(np.stack(boxes)).to(masks.device)

    def eval_boxes(self, masks: torch.Tensor, names: list[str]) -> torch.Tensor:
        """Validation boxes ``[B, 4]``: the first evaluation box of each image (:func:`prompt_boxes`, fixed by
        ``seed`` and the case name), the same every validation."""
        hp = self.hparams
        arrays = masks[:, 0].detach().cpu().numpy() > 0.5
        boxes = [
            prompt_boxes(m, n, hp.eval_prompt, 1, hp.seed, hp.max_jitter_px, hp.jitter_ref_size)[0]
            for m, n in zip(arrays, names, strict=True)
        ]
        return torch.from_numpy(np.stack(boxes)).to(masks.device)

    # -------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        n_all, n_train = count_parameters(self.sam), count_parameters(self.sam, trainable_only=True)
        cache = "off" if self.cache is None else f"{self.cache.storage}, {self.cache.dtype}"
        log.info(
            "SAM fine-tuning: trainable=%s, %d of %d parameters trained; embedding cache %s",
            self.hparams.trainable, n_train, n_all, cache,
        )  # fmt: skip

    def train_rng(self, batch_idx: int) -> np.random.Generator:
        """The random state of one training batch (its box jitter): fixed by the seed, the rank and the
        position in training, so a resumed run draws what an uninterrupted one would."""
        return seeded_rng(self.hparams.seed, self.global_rank, self.global_step, batch_idx)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]
        self.seen_names.update(batch["name"])
        rng = self.train_rng(batch_idx)
        boxes = self.boxes(masks, self.hparams.train_prompt, [rng] * len(images))
        if self.hparams.full_box_share > 0:  # its own stream: the boxes above are drawn as without the mix
            whole = seeded_rng(
                self.hparams.seed, self.global_rank, self.global_step, batch_idx, WHOLE_BOX_STREAM
            )
            pick = torch.from_numpy(whole.random(len(images)) < self.hparams.full_box_share)
            boxes[pick.to(boxes.device)] = torch.from_numpy(full_box(tuple(images.shape[-2:]))).to(boxes)
        loss, _ = self.loss_fn(self(images, boxes), masks)
        self.train_loss.update(loss, weight=len(images))
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log(
            "train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(images), sync_dist=True
        )
        return loss

    def on_train_end(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[set[str] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self.seen_names)
            self.seen_names = set().union(*gathered)
        if self.cache is not None:
            log.info(
                "embedding cache: %d entries, %d hits, %d misses",
                len(self.cache), self.cache.hits, self.cache.misses,
            )  # fmt: skip

    def on_train_epoch_end(self) -> None:
        if self.cache is not None:
            log.debug(
                "embedding cache: %d entries, %d hits, %d misses so far",
                len(self.cache), self.cache.hits, self.cache.misses,
            )  # fmt: skip

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        low_res = self(images, self.eval_boxes(masks, list(batch["name"])))
        loss, _ = self.loss_fn(low_res, masks)
        pred = logits_to_working(self.sam, low_res, tuple(images.shape[-2:])) > self.sam.mask_threshold
        dice, iou = hard_dice_iou(pred, masks > 0.5)
        self.val_loss.update(loss, weight=len(images))
        self.val_dice.update(dice)  # the mean over images, synchronised across ranks by torchmetrics
        self.val_iou.update(iou)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/dice", self.val_dice, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/iou", self.val_iou, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/dice"}}
