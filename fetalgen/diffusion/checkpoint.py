"""Rebuild a trained generator from a Lightning checkpoint file alone (nanoGPT-style self-contained checkpoints).

A checkpoint written by :class:`fetalgen.diffusion.module.JointDiffusionModule` carries the UNet config, the
noise-scheduler config and the EMA state; ``fetalgen-train-diffusion`` adds the run's record (its resolved config
and training cases, :class:`fetalgen.utils.checkpoints.RunRecord`), as ``fetalgen-finetune`` does for SAM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from fetalgen.data.cases import DataError
from fetalgen.diffusion.module import CHECKPOINT_KEY, EMA_KEY
from fetalgen.utils.checkpoints import CheckpointError, RunCheckpoint, rebuild
from fetalgen.utils.files import sha256_file

# What a stored UNet config may ask for before anything is built (a crafted width would allocate gigabytes): far
# above every fetalgen generator (the paper's: 256 px, widths up to 512, 2 layers a block, 2 channels).
UNET_LIMITS = {"sample_size": 4096, "in_channels": 16, "out_channels": 16, "layers_per_block": 8,
               "num_class_embeds": 1024, "width": 2048, "levels": 8, "parameters": 2_000_000_000}  # fmt: skip


def check_unet_config(config: Any, path: Path) -> None:
    """Refuse (DataError naming ``path``) a stored UNet config that is not a mapping or asks for sizes beyond
    :data:`UNET_LIMITS`, before the UNet is built."""
    if not isinstance(config, dict):
        raise DataError(path, f"the stored UNet config is not a mapping ({type(config).__name__})")
    problems = []
    for key in ("sample_size", "in_channels", "out_channels", "layers_per_block", "num_class_embeds"):
        value = config.get(key)
        if value is not None and not (isinstance(value, int) and 0 <= value <= UNET_LIMITS[key]):
            problems.append(f"{key}={value!r} (at most {UNET_LIMITS[key]})")
    widths = config.get("block_out_channels") or []
    if not (isinstance(widths, (list, tuple)) and 0 < len(widths) <= UNET_LIMITS["levels"]
            and all(isinstance(w, int) and 0 < w <= UNET_LIMITS["width"] for w in widths)):  # fmt: skip
        problems.append(f"block_out_channels={widths!r} (1-{UNET_LIMITS['levels']} widths of at most "
                        f"{UNET_LIMITS['width']})")  # fmt: skip
    elif isinstance(config.get("layers_per_block", 2), int):  # a bound on the weights: ~9 w^2 per resnet conv
        estimate = sum(18 * w * w * (1 + int(config.get("layers_per_block", 2))) for w in widths)
        if estimate > UNET_LIMITS["parameters"]:
            problems.append(f"about {estimate:,} parameters (at most {UNET_LIMITS['parameters']:,})")
    if problems:
        raise DataError(path, "the stored UNet config is out of bounds: " + "; ".join(problems))


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[UNet2DModel, dict[str, Any], dict[str, Any]]:
    """The trained generator (EMA weights), the training noise-scheduler config and metadata, from the file alone:
    :func:`~fetalgen.utils.checkpoints.rebuild` with the builder the checkpoint names (:func:`unet_from_checkpoint`
    or :func:`paper_lora_from_checkpoint`).

    Args:
        path: Lightning checkpoint (``last.ckpt`` or a step checkpoint).
        device: where to put the UNet.
        use_ema: load the EMA weights (the default; the raw training weights otherwise).

    Raises:
        FileNotFoundError, CheckpointError: no such file, unreadable, not a generator checkpoint, or naming an
            unknown builder; DataError: weights or EMA that do not fit.

    Returns:
        ``(unet, noise_scheduler_config, meta)``: the UNet in eval mode without gradients;
        ``meta`` holds ``config`` (the resolved run config or None), ``global_step``, ``epoch``, ``image_size``,
        ``num_classes``, ``class_key``, ``generator`` (the builder key: ``joint``, ``mask_conditioned``,
        ``paper_lora``), ``training_cases`` (provenance records, None for older checkpoints), ``ema`` (whether EMA
        weights were loaded), ``sha256`` and ``path``.
    """
    return rebuild(path, "diffusion", device=device, use_ema=use_ema)


def described(record: RunCheckpoint) -> dict[str, Any]:
    """The generator description the module stored (``fetalgen``), refused when absent."""
    if not isinstance(record.contents.get(CHECKPOINT_KEY), dict):
        raise CheckpointError(f"{record.path}: holds no generator description ('{CHECKPOINT_KEY}'); train with "
                              "fetalgen-train-diffusion")  # fmt: skip
    return record.contents[CHECKPOINT_KEY]


def paper_lora_from_checkpoint(
    record: RunCheckpoint, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The builder of the paper's latent generator (its base model's path and LoRA weights; no EMA)."""
    from fetalgen.diffusion.paper_lora import PaperLoraGenerator

    extra = described(record)
    try:
        generator = PaperLoraGenerator.from_checkpoint(record.contents, device)
    except (ValueError, OSError) as err:
        raise DataError(record.path, str(err)) from err
    return generator, dict(extra["noise_scheduler_config"]), generator_meta(record, extra, False)


def unet_from_checkpoint(
    record: RunCheckpoint, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[UNet2DModel, dict[str, Any], dict[str, Any]]:
    """The builder of the pixel UNet generators (joint and mask-conditioned): the UNet from its stored config
    (within :data:`UNET_LIMITS`), its weights, and the EMA weights checked tensor by tensor when ``use_ema``."""
    path, ckpt, extra = record.path, record.contents, described(record)
    check_unet_config(extra.get("unet_config"), path)
    unet = UNet2DModel.from_config(extra["unet_config"])
    prefix = "unet."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        unet.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(path, f"UNet weights do not fit the stored UNet config: {err}") from err
    ema_loaded = use_ema and EMA_KEY in ckpt
    if ema_loaded:
        load_ema(unet, ckpt[EMA_KEY], path)
    unet.to(device).eval().requires_grad_(False)
    return unet, dict(extra["noise_scheduler_config"]), generator_meta(record, extra, ema_loaded)


def load_ema(unet: UNet2DModel, state: Any, path: Path) -> None:
    """Copy the EMA weights of ``state`` into ``unet``, refusing a state that does not fit it tensor by tensor."""
    ema = EMAModel(unet.parameters())
    try:
        ema.load_state_dict(state)
    except (ValueError, TypeError, AttributeError) as err:
        raise DataError(path, f"the EMA state cannot be read: {err}") from err
    n_params = len(list(unet.parameters()))
    if len(ema.shadow_params) != n_params:  # copy_to would zip them silently
        raise DataError(
            path, f"EMA holds {len(ema.shadow_params)} tensors for a UNet with {n_params} parameters"
        )
    wrong = [
        f"{name}: EMA {tuple(shadow.shape)} vs UNet {tuple(param.shape)}"
        for (name, param), shadow in zip(unet.named_parameters(), ema.shadow_params, strict=True)
        if shadow.shape != param.shape
    ]
    if wrong:  # copy_to would broadcast a wrong-shaped tensor into the weight
        raise DataError(path, f"{len(wrong)} EMA tensors do not fit the UNet: {'; '.join(wrong[:3])}")
    ema.copy_to(unet.parameters())


def generator_meta(record: RunCheckpoint, extra: dict[str, Any], ema: bool) -> dict[str, Any]:
    """What :func:`load_generator` tells of a generator besides its weights (its doc)."""
    path, ckpt = record.path, record.contents
    return {
        "config": record.config,
        "generator": record.builder_key,
        "global_step": int(ckpt.get("global_step", 0)),
        "epoch": int(ckpt.get("epoch", 0)),
        "image_size": int(extra["image_size"]),
        "num_classes": int(extra["num_classes"]),
        "class_key": extra["class_key"],
        "ema": ema,
        "training_cases": (record.provenance or {}).get("training_cases"),
        "shape_prior": (record.provenance or {}).get("shape_prior"),
        "sha256": sha256_file(path),
        "path": str(path.resolve()),
    }
