"""Sampling from the joint image-and-mask model: samplers, the denoising loop, the mask-conditioned mode.

One loop for every sampler (diffusers' pattern): ``set_timesteps``, then for ``t`` in ``scheduler.timesteps``
the model output (with classifier-free guidance when asked) and ``scheduler.step(...).prev_sample``.

Determinism per index: every sample has its own ``torch.Generator`` seeded from ``derive_seed(seed, i)`` (the run's
seed and the sample's index, :mod:`fetalgen.utils.seeds`), and diffusers receives the LIST of generators (``randn_tensor`` and
``scheduler.step`` draw each sample's noise from its own generator). Sample ``i`` is therefore a function of
``(seed, i)`` only, whatever the batch it is computed in (up to float rounding of batched kernels).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from fetalgen.diffusion.channels import MASK_CHANNEL, to_signed
from fetalgen.metrics.biometry import Ellipse, ellipse_circumference, ellipse_mask

SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any], int | None]] = {
    # name: (scheduler class, extra config, default number of steps; None = the training schedule's length)
    "ddpm": (DDPMScheduler, {}, None),
    "ddim": (DDIMScheduler, {}, 50),
    # Thresholding at sample_max_value=1 clips the predicted x0 to [-1, 1], as clip_sample does for DDPM and
    # DDIM (diffusers recommends it for DPM-Solver++ in pixel space).
    "dpmsolver++": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "thresholding": True, "sample_max_value": 1.0},
        20,
    ),
    # The stochastic (SDE) variant: the same cost per step, but the injected noise corrects errors of an
    # imperfect model; on briefly trained models its masks pass QC about as often as DDPM-1000's
    # (experiments/bench/samplers.py), where the ODE samplers (DDIM, dpmsolver++) lose much.
    "sde-dpmsolver++": (
        DPMSolverMultistepScheduler,
        {
            "algorithm_type": "sde-dpmsolver++",
            "solver_order": 2,
            "thresholding": True,
            "sample_max_value": 1.0,
        },
        20,
    ),
    # UniPC (a predictor-corrector ODE solver, diffusers' default for few steps): deterministic, no noise drawn.
    "unipc": (UniPCMultistepScheduler, {"thresholding": True, "sample_max_value": 1.0}, 10),
}


def make_sampler(
    name: str, noise_scheduler_config: Mapping[str, Any], steps: int | None = None
) -> tuple[SchedulerMixin, int]:
    """A sampling scheduler built with ``from_config`` from the training scheduler's config.

    Args:
        name: ``ddpm``, ``ddim``, ``dpmsolver++``, ``sde-dpmsolver++`` or ``unipc``.
        noise_scheduler_config: the training ``noise_scheduler.config`` (betas, prediction type, ...).
        steps: number of denoising steps; ``None`` takes the sampler's default (DDPM: all training steps,
            DDIM: 50, DPM-Solver++ and its SDE variant: 20, UniPC: 10).

    Returns:
        ``(scheduler, steps)``.
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    cls, extra, default_steps = SAMPLERS[name]
    scheduler = cls.from_config(dict(noise_scheduler_config), **extra)
    if steps is None:
        steps = default_steps or int(scheduler.config.num_train_timesteps)
    if not 1 <= steps <= scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be in 1..{scheduler.config.num_train_timesteps}, got {steps}")
    return scheduler, int(steps)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per sample (CPU generators give the same noise on every device)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def step_generators(scheduler: SchedulerMixin, gens: list[torch.Generator]) -> dict[str, Any]:
    """``scheduler.step``'s keyword for the per-sample generators, for the samplers that draw noise in their step
    (UniPC's step takes none)."""
    return {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}


def class_label_tensor(
    unet: UNet2DModel, labels: Sequence[int | None] | None, batch_size: int, device: torch.device
) -> torch.Tensor | None:
    """Class indices for the UNet's class embedding: ``None`` entries (or ``labels=None``) are the null class.

    Returns ``None`` for a model without class embedding (and then every label must be ``None``).
    """
    num_embeds = unet.config.num_class_embeds
    if labels is None:
        labels = [None] * batch_size
    if len(labels) != batch_size:
        raise ValueError(f"{len(labels)} class labels for a batch of {batch_size}")
    if num_embeds is None:
        if any(c is not None for c in labels):
            raise ValueError(
                "class labels given, but the model has no class embedding (num_class_embeds=null)"
            )
        return None
    null = num_embeds - 1
    for c in labels:
        if c is not None and not 0 <= c < null:
            raise ValueError(f"class label {c} out of range 0..{null - 1} (index {null} is the null class)")
    return torch.tensor([null if c is None else int(c) for c in labels], dtype=torch.long, device=device)


def guided_output(
    unet: UNet2DModel, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance_scale: float
) -> torch.Tensor:
    """Model output for ``x`` [B,2,H,W] at timestep ``t`` (scalar or [B]); classifier-free guidance when
    ``guidance_scale != 1``.

    Guidance: ``uncond + s * (cond - uncond)``, the unconditional branch using the null class.
    """
    if labels is None or guidance_scale == 1.0:
        return unet(x, t, class_labels=labels).sample
    null = torch.full_like(labels, unet.config.num_class_embeds - 1)
    t2 = torch.cat([t, t]) if t.ndim else t
    out = unet(torch.cat([x, x]), t2, class_labels=torch.cat([labels, null])).sample
    cond, uncond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def mask_guided_output(
    unet: UNet2DModel,
    x: torch.Tensor,
    mask: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """A mask-conditioned generator's output for images ``x`` [B,1,H,W] given ``mask`` [B,1,H,W] in [-1, 1];
    classifier-free guidance over the mask when ``guidance_scale != 1`` (the unconditional branch sees the null
    mask, zeros, as in training's mask dropout)."""
    if guidance_scale == 1.0:
        return unet(torch.cat([x, mask], dim=1), t, class_labels=labels).sample
    t2 = torch.cat([t, t]) if t.ndim else t
    both = torch.cat([torch.cat([x, mask], dim=1), torch.cat([x, torch.zeros_like(mask)], dim=1)])
    out = unet(both, t2, class_labels=None if labels is None else torch.cat([labels, labels])).sample
    cond, uncond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def is_mask_conditioned(unet: UNet2DModel) -> bool:
    """Whether ``unet`` is a mask-conditioned generator (image + mask in, image out), not the joint one."""
    return getattr(unet.config, "in_channels", None) == 2 and getattr(unet.config, "out_channels", 2) == 1


@torch.inference_mode()
def sample_pairs(
    unet: UNet2DModel,
    scheduler: SchedulerMixin,
    seeds: Sequence[int],
    steps: int,
    image_size: int | None = None,
    class_labels: Sequence[int | None] | None = None,
    guidance_scale: float = 1.0,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate image-and-mask pairs with the denoising loop.

    Args:
        unet: the trained UNet (EMA weights swapped in by the caller); its device is used.
        scheduler: a sampling scheduler from :func:`make_sampler` (its state is reset here).
        seeds: one seed per sample (``fetalgen.utils.seeds.derive_seed(seed, i)``); the batch size is ``len(seeds)``.
        steps: number of denoising steps.
        image_size: side S of the square samples (default ``unet.config.sample_size``).
        class_labels: one class index or ``None`` (null class) per sample; ``None`` = all null.
        guidance_scale: classifier-free guidance scale (1.0: none).
        masks: given masks [B,1,S,S] in {0, 1}. A mask-conditioned generator (:func:`is_mask_conditioned`)
            denoises the image with the clean mask as its second input (guidance over the mask); the joint model
            replaces its mask channel at every step by the given mask (scaled to [-1, 1]) noised to the current
            timestep with ``scheduler.add_noise``. Either way the output's mask channel is the given mask.

    A generator that draws its own pairs (a ``sample_pairs`` method: the paper's latent generator,
    :mod:`fetalgen.diffusion.paper_lora`) is handed the same request.

    Returns:
        float [B,2,S,S]: channel 0 image, channel 1 mask, nominally in [-1, 1] (see ``channels.unpack``).
    """
    if hasattr(unet, "sample_pairs"):
        return unet.sample_pairs(scheduler, seeds, steps, class_labels, guidance_scale, masks)
    device = unet.device
    size = int(image_size or unet.config.sample_size)
    batch = len(seeds)
    gens = generators(seeds)
    labels = class_label_tensor(unet, class_labels, batch, device)
    dtype = next(unet.parameters()).dtype
    conditioned = is_mask_conditioned(unet)
    if conditioned and masks is None:
        raise ValueError("a mask-conditioned generator needs the masks to draw images for")
    channels = 1 if conditioned else unet.config.in_channels
    x = randn_tensor((batch, channels, size, size), generator=gens, device=device, dtype=dtype)
    known = None
    if masks is not None:
        if masks.shape != (batch, 1, size, size):
            raise ValueError(f"masks must be [{batch},1,{size},{size}], got {tuple(masks.shape)}")
        known = to_signed(masks.to(device=device, dtype=dtype))
    x = denoise(unet, scheduler, x, steps, gens, labels, guidance_scale, known, conditioned)
    if conditioned:
        return torch.cat([x, known], dim=1)
    if known is not None:
        x[:, MASK_CHANNEL : MASK_CHANNEL + 1] = known
    return x


def denoise(
    unet: UNet2DModel,
    scheduler: SchedulerMixin,
    x: torch.Tensor,
    steps: int,
    gens: list[torch.Generator],
    labels: torch.Tensor | None,
    guidance_scale: float,
    known: torch.Tensor | None,
    conditioned: bool,
) -> torch.Tensor:
    """The denoising loop of :func:`sample_pairs` from the noise ``x``: the given masks ``known`` condition a
    mask-conditioned UNet, or replace the joint model's mask channel (noised to each timestep)."""
    scheduler.set_timesteps(steps, device=x.device)
    step_kwargs = step_generators(scheduler, gens)
    for t in scheduler.timesteps:
        if known is not None and not conditioned:
            noise = randn_tensor(known.shape, generator=gens, device=x.device, dtype=x.dtype)
            x[:, MASK_CHANNEL : MASK_CHANNEL + 1] = scheduler.add_noise(
                known, noise, t.reshape(1).expand(len(x))
            )
        model_input = scheduler.scale_model_input(x, t)
        if conditioned:
            out = mask_guided_output(unet, model_input, known, t, labels, guidance_scale)
        else:
            out = guided_output(unet, model_input, t, labels, guidance_scale)
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x


def head_mask(
    size: int,
    semi_major: float,
    axis_ratio: float = 0.8,
    center: tuple[float, float] = (0.5, 0.5),
    angle_deg: float = 0.0,
) -> np.ndarray:
    """A filled elliptical head mask on a ``size`` x ``size`` image.

    Args:
        size: image side in pixels.
        semi_major: semi-major axis as a fraction of ``size``.
        axis_ratio: semi_minor / semi_major, in (0, 1].
        center: centre (x, y) as fractions of ``size``.
        angle_deg: direction of the major axis (x towards y, degrees).

    Returns:
        bool [size, size].
    """
    if not 0 < axis_ratio <= 1 or semi_major <= 0:
        raise ValueError(f"need semi_major > 0 and 0 < axis_ratio <= 1, got {semi_major}, {axis_ratio}")
    a = semi_major * size
    e = Ellipse(center[0] * size - 0.5, center[1] * size - 0.5, a, a * axis_ratio, angle_deg)
    return ellipse_mask(e, (size, size))


def semi_major_for_hc(hc: float, axis_ratio: float = 0.8) -> float:
    """Semi-major axis (same unit as ``hc``) of the ellipse with circumference ``hc`` and the given axis ratio."""
    return hc / ellipse_circumference(1.0, axis_ratio)


def head_mask_for_hc(
    size: int,
    hc_mm: float,
    pixel_size_mm: float,
    axis_ratio: float = 0.8,
    center: tuple[float, float] = (0.5, 0.5),
    angle_deg: float = 0.0,
) -> np.ndarray:
    """A head mask whose measured head circumference (``biometry.measure_head``) is ``hc_mm``.

    ``measure_head`` fits the ellipse through the centres of the boundary pixels, half a pixel inside the
    region's edge, so the drawn ellipse's semi-axes are grown by 0.5 px to compensate.

    Returns:
        bool [size, size].
    """
    a = semi_major_for_hc(hc_mm / pixel_size_mm, axis_ratio)
    e = Ellipse(center[0] * size - 0.5, center[1] * size - 0.5, a + 0.5, a * axis_ratio + 0.5, angle_deg)
    return ellipse_mask(e, (size, size))


def masks_to_tensor(masks: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack bool HxW masks into float [B,1,H,W] in {0, 1}."""
    return torch.from_numpy(np.stack([np.asarray(m, dtype=np.float32) for m in masks]))[:, None]
