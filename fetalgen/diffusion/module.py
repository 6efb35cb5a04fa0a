"""LightningModules of the generators: the joint two-channel (image, mask) diffusion model, and the image model
conditioned on a mask (:class:`MaskConditionedDiffusionModule`).

Training follows diffusers' ``train_unconditional.py``: draw noise and timesteps, ``noise_scheduler.add_noise``,
regress the target given by ``prediction_type`` (the noise for ``epsilon``, ``get_velocity`` for
``v_prediction``). EMA weights (``diffusers.training_utils.EMAModel``) are swapped in for validation and
sampling, then restored, and travel in the Lightning checkpoint with the UNet and scheduler configs, so that
:func:`fetalgen.diffusion.checkpoint.load_generator` rebuilds the generator from the file alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.training_utils import EMAModel
from pytorch_lightning import LightningModule

from fetalgen.data.dataset import IMAGES, PAIRS
from fetalgen.diffusion.channels import pack
from fetalgen.diffusion.sampling import make_sampler, sample_pairs
from fetalgen.utils.seeds import derive_seed, torch_generator

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
CHECKPOINT_KEY = "fetalgen"  # our extra entry in the Lightning checkpoint
LABELLED = "labelled"  # batch key: False for an image without its mask (the unconditional input)
EMA_KEY = "ema"


def check_prediction_type(prediction_type: str) -> str:
    """Return ``prediction_type`` if supported, else raise ``ValueError``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"Unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")
    return prediction_type


def draw_training_noise(
    x0: torch.Tensor, num_train_timesteps: int, device: torch.device, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise like ``x0`` and one training timestep per sample, from ``generator`` (CPU) or the global RNG."""
    if generator is None:
        return torch.randn_like(x0), torch.randint(0, num_train_timesteps, (x0.shape[0],), device=device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    return noise, torch.randint(0, num_train_timesteps, (x0.shape[0],), generator=generator).to(device)


def regression_target(
    scheduler: SchedulerMixin, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What a denoiser regresses for ``scheduler.config.prediction_type``: the noise, the velocity or the sample."""
    kind = check_prediction_type(scheduler.config.prediction_type)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    return x0


def optimizers_with_schedule(
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    lr_scheduler_factory: Callable[..., Any] | None,
    params: Any,
    trainer: Any,
) -> dict[str, Any]:
    """``configure_optimizers``' answer for a generator: the optimizer over ``params`` and, when given, its LR
    schedule stepped every step (``num_training_steps`` filled from the trainer when the partial leaves it out)."""
    optimizer = optimizer_factory(params=params)
    if lr_scheduler_factory is None:
        return {"optimizer": optimizer}
    kwargs: dict[str, Any] = {}
    if getattr(lr_scheduler_factory, "keywords", {}).get("num_training_steps") is None:
        kwargs["num_training_steps"] = int(trainer.estimated_stepping_batches)
    scheduler = lr_scheduler_factory(optimizer=optimizer, **kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class JointDiffusionModule(LightningModule):
    """DDPM training of a ``UNet2DModel`` over [B,2,S,S] (image, mask) in [-1, 1], optionally class-conditional.

    Logs ``train/loss`` every step and ``val/loss`` on the validation split, computed with the EMA weights and
    a fixed noise/timestep draw per batch (``val_seed``), so that it is comparable between evaluations.

    Args:
        unet: built ``diffusers.UNet2DModel`` with 2 input and 2 output channels. Class conditioning is on when
            ``unet.config.num_class_embeds`` is set: it must be ``num_classes + 1``, the last index being the
            null class (unconditional; used for label dropout and classifier-free guidance).
        noise_scheduler: built diffusers scheduler for training (``DDPMScheduler``); its config also seeds the
            samplers (``sampling.make_sampler``).
        optimizer: partial optimizer (``_partial_: true``), finished with the UNet's parameters.
        lr_scheduler: partial LR scheduler taking ``optimizer`` (and ``num_training_steps``, filled from the
            trainer when absent), stepped every step; ``None`` for a constant LR.
        ema: partial ``EMAModel`` finished with the UNet's parameters; ``None`` for no EMA.
        image_size: side S of the square training images.
        class_key: batch key holding the class index (int, -1 = unknown -> null class).
        p_uncond: probability of replacing a label by the null class during training (classifier-free guidance).
        val_seed: seed of the fixed noise and timesteps of the validation loss (comparable across epochs).
        mask_loss_weight: weight of the mask channel's error against the image channel's (1: the plain mean);
            the loss is ``(image MSE + w * mask MSE) / (1 + w)``.
    """

    generator_kind = "joint"  # recorded in the checkpoint; the UNet's channels tell the kind as well
    out_channels = 2  # the UNet's output: image and mask
    learns_from_images = False  # whether images without masks (the unlabelled pool) can train it

    @property
    def builder_key(self) -> str:
        """What rebuilds it from a checkpoint (``BUILDERS["diffusion"]`` of :mod:`fetalgen.utils.checkpoints`): its kind."""
        return self.generator_kind

    def __init__(
        self,
        unet: UNet2DModel,
        noise_scheduler: SchedulerMixin,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        ema: Callable[..., EMAModel] | None = None,
        image_size: int = 64,
        class_key: str = "trimester",
        p_uncond: float = 0.1,
        val_seed: int = 0,
        mask_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.check_channels(unet)
        if mask_loss_weight < 0:
            raise ValueError(f"mask_loss_weight must be >= 0, got {mask_loss_weight}")
        self.mask_loss_weight = float(mask_loss_weight)
        if unet.config.num_class_embeds is not None and unet.config.num_class_embeds < 2:
            raise ValueError(
                "num_class_embeds must be num_classes + 1 >= 2 (the last is the null class), or null"
            )
        check_prediction_type(noise_scheduler.config.prediction_type)
        factor = 2 ** (
            len(unet.config.block_out_channels) - 1
        )  # each down block but the last halves the side
        if int(image_size) % factor:
            raise ValueError(
                f"image_size={image_size} does not fit this UNet: its {len(unet.config.block_out_channels)} "
                f"levels need a multiple of {factor} (e.g. {factor * max(1, round(int(image_size) / factor))})"
            )
        self.unet = unet
        self.noise_scheduler = noise_scheduler
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.ema = ema(self.unet.parameters()) if ema is not None else None
        self.image_size = int(image_size)
        self.class_key = class_key
        self.p_uncond = float(p_uncond)
        self.val_seed = int(val_seed)

    def check_channels(self, unet: UNet2DModel) -> None:
        """In: image and mask (the mask-conditioned model: the noisy image and the clean mask); out:
        :attr:`out_channels`."""
        if unet.config.in_channels != 2 or unet.config.out_channels != self.out_channels:
            raise ValueError(
                f"the {self.generator_kind} generator needs a UNet with in_channels=2 and "
                f"out_channels={self.out_channels}"
            )

    # ----------------------------------------------------------------------------------------- conditioning
    @property
    def num_classes(self) -> int:
        """Number of real classes (0: unconditional model)."""
        n = self.unet.config.num_class_embeds
        return 0 if n is None else int(n) - 1

    def class_labels(self, batch: dict[str, Any], drop: bool) -> torch.Tensor | None:
        """Class indices [B] for the UNet from ``batch[class_key]``; unknown (<0) and dropped labels -> null.

        Returns ``None`` for an unconditional model.
        """
        if self.num_classes == 0:
            return None
        if self.class_key not in batch:
            raise KeyError(f"class-conditional model, but the batch has no {self.class_key!r} key")
        labels = torch.as_tensor(batch[self.class_key], device=self.device).long().reshape(-1)
        if (labels >= self.num_classes).any():
            raise ValueError(
                f"{self.class_key} labels {labels.tolist()} exceed num_classes={self.num_classes}"
            )
        null = torch.full_like(labels, self.num_classes)
        labels = torch.where(labels < 0, null, labels)
        if drop and self.p_uncond > 0:
            dropped = torch.rand(labels.shape, device=self.device) < self.p_uncond
            labels = torch.where(dropped, null, labels)
        return labels

    def with_unlabelled(self, pairs: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
        """One batch of labelled pairs and images without masks (:class:`~fetalgen.data.dataset.ImageDataset`:
        zero masks, unknown class), for a model that learns the image from them (:attr:`learns_from_images`)."""
        if not self.learns_from_images:
            raise ValueError(
                f"the {self.generator_kind} generator learns masks, so it cannot train on images without them "
                "(data.unlabelled): leave it unset, or train generator=mask_conditioned"
            )
        n_pairs, n_images = len(pairs["image"]), len(images["image"])
        merged = {"image": torch.cat([pairs["image"], images["image"]]),
                  "mask": torch.cat([pairs["mask"], torch.zeros_like(images["image"])]),
                  LABELLED: torch.arange(n_pairs + n_images) < n_pairs}  # fmt: skip
        if self.class_key in pairs:  # an image's class is unknown: the null class
            unknown = torch.full((len(images["image"]),), -1, dtype=torch.long)
            merged[self.class_key] = torch.cat([torch.as_tensor(pairs[self.class_key]).long().cpu(), unknown])
        return merged

    # ----------------------------------------------------------------------------------------------- loss
    def loss_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target for ``noise_scheduler.config.prediction_type`` (:func:`regression_target`)."""
        return regression_target(self.noise_scheduler, x0, noise, timesteps)

    def draw_noise(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise like ``x0`` and one training timestep per sample (:func:`draw_training_noise`)."""
        num_t = int(self.noise_scheduler.config.num_train_timesteps)
        return draw_training_noise(x0, num_t, self.device, generator)

    def diffusion_loss(
        self,
        batch: dict[str, Any],
        drop_labels: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MSE between the UNet output on noised pairs and the target.

        Args:
            batch: ``image`` [B,1,S,S] in [0,1], ``mask`` [B,1,S,S] in {0,1}, and the class key if conditional.
            drop_labels: apply label dropout (training only).
            generator: CPU generator for noise and timesteps (fixed validation noise); ``None``: global RNG.
        """
        x0 = pack(batch["image"], batch["mask"])
        noise, timesteps = self.draw_noise(x0, generator)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        target = self.loss_target(x0, noise, timesteps)
        pred = self.unet(noisy, timesteps, class_labels=self.class_labels(batch, drop=drop_labels)).sample
        per_channel = (pred.float() - target.float()).pow(2).mean(dim=(0, 2, 3))  # [image, mask]
        return (per_channel[0] + self.mask_loss_weight * per_channel[1]) / (1 + self.mask_loss_weight)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if IMAGES in batch:  # labelled pairs and unlabelled images (train_diffusion's combined loader)
            batch = self.with_unlabelled(batch[PAIRS], batch[IMAGES])
        loss = self.diffusion_loss(batch, drop_labels=True)
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=batch["image"].shape[0],
        )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator = torch_generator(self.val_seed, batch_idx)
        with self.ema_weights():
            loss = self.diffusion_loss(batch, drop_labels=False, generator=generator)
        self.log(
            "val/loss", loss, prog_bar=True, on_epoch=True, batch_size=batch["image"].shape[0], sync_dist=True
        )
        return loss

    # ------------------------------------------------------------------------------------------------- EMA
    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(device=self.device)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then one EMA update (so EMA steps = optimizer steps, under accumulation too)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.step(self.unet.parameters())

    @contextmanager
    def ema_weights(self) -> Iterator[UNet2DModel]:
        """Swap the EMA weights into the UNet (eval mode) for the ``with`` block, then restore weights and mode."""
        was_training = self.unet.training
        params = list(self.unet.parameters())
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        self.unet.eval()
        try:
            yield self.unet
        finally:
            if self.ema is not None:
                self.ema.restore(params)
            self.unet.train(was_training)

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        seed: int = 0,
        sampler: str = "sde-dpmsolver++",
        steps: int | None = None,
        class_labels: Sequence[int | None] | None = None,
        guidance_scale: float = 1.0,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` pairs [n,2,S,S] in [-1,1] with the EMA weights; sample ``i`` uses ``derive_seed(seed, i)``."""
        scheduler, steps = make_sampler(sampler, self.noise_scheduler.config, steps)
        seeds = [derive_seed(seed, i) for i in range(n)]
        with self.ema_weights() as unet:
            return sample_pairs(
                unet, scheduler, seeds, steps, self.image_size, class_labels, guidance_scale, masks
            )

    # ----------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        return optimizers_with_schedule(
            self.optimizer_factory, self.lr_scheduler_factory, self.unet.parameters(), self.trainer
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What rebuilds the generator from the file alone (the run's config and provenance: ``RunRecord``)."""
        if self.ema is not None:
            checkpoint[EMA_KEY] = self.ema.state_dict()
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "unet_config": dict(self.unet.config),
            "noise_scheduler_config": dict(self.noise_scheduler.config),
            "image_size": self.image_size,
            "class_key": self.class_key,
            "num_classes": self.num_classes,
            "generator": self.generator_kind,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            if EMA_KEY not in checkpoint:
                raise KeyError(
                    "checkpoint has no EMA state; it was not written by JointDiffusionModule with EMA"
                )
            self.ema.load_state_dict(checkpoint[EMA_KEY])
            self.ema.to(device=self.device)


class MaskConditionedDiffusionModule(JointDiffusionModule):
    """The image generator conditioned on a head mask: the UNet denoises the image channel with the clean mask as
    its second input channel, and learns the unconditional image too (the mask replaced by zeros with probability
    ``p_mask_drop``), for classifier-free guidance over the mask at sampling (:func:`~fetalgen.diffusion.sampling.
    mask_guided_output`). Images without masks (the unlabelled pool) train that unconditional branch: what
    ultrasound looks like from every image, what a mask means from the few labelled pairs. Scheduler, EMA,
    validation, sampling loop and checkpoint contract: the joint model's.

    Args:
        unet: ``UNet2DModel`` with ``in_channels=2`` (noisy image, clean mask) and ``out_channels=1`` (the image's
            target: noise, velocity or sample, by the scheduler's ``prediction_type``).
        p_mask_drop: probability of training a sample without its mask (the unconditional branch).
        **kwargs: as :class:`JointDiffusionModule`.
    """

    generator_kind = "mask_conditioned"
    out_channels = 1  # the image's target only
    learns_from_images = True  # an image without its mask trains the unconditional branch

    def __init__(self, unet: UNet2DModel, *args: Any, p_mask_drop: float = 0.1, **kwargs: Any) -> None:
        super().__init__(unet, *args, **kwargs)
        if not 0.0 <= p_mask_drop < 1.0:
            raise ValueError(f"p_mask_drop must be in [0, 1), got {p_mask_drop}")
        self.p_mask_drop = float(p_mask_drop)

    def diffusion_loss(
        self,
        batch: dict[str, Any],
        drop_labels: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MSE between the UNet output for the noised image given its mask and the image's target (the
        module doc); ``drop_labels`` also drops masks (training only)."""
        image, mask = pack(batch["image"], batch["mask"]).split(1, dim=1)
        noise, timesteps = self.draw_noise(image, generator)
        keep = torch.ones(image.shape[0], dtype=torch.bool, device=self.device)
        if drop_labels:  # training (global RNG): the unconditional branch for guidance
            keep = torch.rand(image.shape[0], device=self.device) >= self.p_mask_drop
        if LABELLED in batch:  # an image without its mask: the null mask (zeros in [-1, 1]), as when dropped
            keep = keep & torch.as_tensor(batch[LABELLED], device=self.device).bool()
        mask = mask * keep.view(-1, 1, 1, 1).to(mask)
        noisy = self.noise_scheduler.add_noise(image, noise, timesteps)
        target = self.loss_target(image, noise, timesteps)
        labels = self.class_labels(batch, drop=drop_labels)
        pred = self.unet(torch.cat([noisy, mask], dim=1), timesteps, class_labels=labels).sample
        return F.mse_loss(pred.float(), target.float())
