"""The paper's own generator as a reference variant: Stable Diffusion 1.5 fine-tuned with LoRA (diffusers + peft)
on image-mask pairs packed as RGB ``[image, image, mask]``, the mask read back from the third channel, as the code of
Wang et al. 2025 does. For users with the SD 1.5 weights and a GPU, to run "ours vs the paper's generator"
(``model=diffusion/paper_lora``; ``pip install -e .[paper-generator]``). Tested with tiny random components only:
it has not run at scale here.

The module trains through ``fetalgen-train-diffusion`` like fetalgen's own generators (same data, checkpoint
contract, sample grid) and samples through ``fetalgen-sample``: it draws its own pairs (:meth:`sample_pairs`), in
the latent space of the frozen VAE, with the sampler built from its scheduler's config. Its checkpoint holds the
LoRA weights and the base model's path only, never the base weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from pytorch_lightning import LightningModule

from fetalgen.diffusion.channels import to_signed
from fetalgen.diffusion.module import (
    CHECKPOINT_KEY,
    check_prediction_type,
    draw_training_noise,
    optimizers_with_schedule,
    regression_target,
)
from fetalgen.diffusion.sampling import generators, make_sampler, step_generators
from fetalgen.utils.files import sha256_file
from fetalgen.utils.seeds import derive_seed, torch_generator

log = logging.getLogger(__name__)

GENERATOR_KIND = "paper_lora"
LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
)  # the attention projections, as diffusers' LoRA examples do


def pack_rgb(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B,1,S,S]`` image in [0, 1] and mask in {0, 1} -> ``[B,3,S,S]`` RGB ``[image, image, mask]`` in [-1, 1]."""
    image, mask = to_signed(image), to_signed(mask)
    return torch.cat([image, image, mask], dim=1)


def unpack_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """``[B,3,S,S]`` decoded RGB in [-1, 1] -> fetalgen's pair ``[B,2,S,S]``: the image (the mean of the two image
    channels) and the mask (the third channel)."""
    return torch.cat([rgb[:, :2].mean(dim=1, keepdim=True), rgb[:, 2:3]], dim=1)


@dataclass
class StableDiffusionParts:
    """The components of a Stable Diffusion checkpoint in diffusers' folder layout."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]


BASE_PARTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


def base_model_folder(pretrained: str | Path) -> Path:
    """The base model as a local folder in diffusers' layout; anything else (a Hub id) is a ValueError: fetalgen
    never contacts the Hub for it (download it once, e.g. ``huggingface-cli download
    stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir <folder>``, and give the folder)."""
    folder = Path(pretrained)
    missing = [part for part in BASE_PARTS if not (folder / part).is_dir()]
    if missing:
        raise ValueError(f"model.pretrained={pretrained}: not a local Stable Diffusion folder in diffusers' layout "
                         f"(missing {', '.join(missing)}); download the base model once and give its folder "
                         "(fetalgen does not contact the Hub)")  # fmt: skip
    return folder


def base_model_sha256(folder: str | Path) -> str:
    """One sha256 over every file of the base model's parts (relative path and content): what a checkpoint records,
    so that its LoRA weights are applied to the base model they were trained on."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for part in BASE_PARTS for p in (root / part).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def load_stable_diffusion(pretrained: str) -> StableDiffusionParts:
    """The VAE, UNet, CLIP text encoder, tokenizer and scheduler config of ``pretrained``, a local folder in
    diffusers' layout (e.g. ``stable-diffusion-v1-5``; :func:`base_model_folder`), read without the network."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as err:  # an optional extra
        raise ImportError(
            "the paper's generator needs transformers and peft: pip install -e '.[paper-generator]'"
        ) from err
    folder = str(base_model_folder(pretrained))
    local = {"local_files_only": True}
    return StableDiffusionParts(
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", **local),
        unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **local),
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **local),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **local),
        scheduler_config=dict(DDPMScheduler.load_config(folder, subfolder="scheduler", **local)),
    )


class PaperLoraGenerator(LightningModule):
    """SD 1.5 + LoRA on RGB-packed pairs (the module doc).

    Args:
        pretrained: the Stable Diffusion folder (diffusers layout); recorded in the checkpoint, not its weights.
        optimizer: partial optimizer, finished with the LoRA parameters.
        prompt: the one text prompt of every pair (the paper trains on a fixed prompt).
        lora_rank: rank (and alpha) of the LoRA adapters on the UNet's attention projections.
        image_size: side of the square training images (SD 1.5: 512; a multiple of the VAE's factor).
        lr_scheduler: partial LR scheduler taking ``optimizer`` and ``num_training_steps``; None: constant.
        val_seed: seed of the fixed noise of the validation loss.
    """

    # builder_key: what rebuilds it from a checkpoint (BUILDERS["diffusion"] of fetalgen.utils.checkpoints)
    generator_kind = builder_key = GENERATOR_KIND
    num_classes = 0

    def __init__(
        self,
        pretrained: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        prompt: str = "an ultrasound image of a fetal head",
        lora_rank: int = 4,
        image_size: int = 512,
        lr_scheduler: Callable[..., Any] | None = None,
        val_seed: int = 0,
    ) -> None:
        super().__init__()
        from peft import LoraConfig

        parts = load_stable_diffusion(str(pretrained))
        self.vae, self.unet, self.text_encoder, self.tokenizer = (
            parts.vae, parts.unet, parts.text_encoder, parts.tokenizer
        )  # fmt: skip
        for frozen in (self.vae, self.unet, self.text_encoder):
            frozen.requires_grad_(False)
        self.unet.add_adapter(
            LoraConfig(
                r=lora_rank,
                lora_alpha=lora_rank,
                init_lora_weights="gaussian",
                target_modules=list(LORA_TARGETS),
            )
        )
        self.noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
        check_prediction_type(self.noise_scheduler.config.prediction_type)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if int(image_size) % factor:
            raise ValueError(
                f"image_size={image_size} is not a multiple of the VAE's downsampling factor {factor}"
            )
        self.pretrained, self.prompt, self.lora_rank = str(pretrained), prompt, int(lora_rank)
        self.pretrained_sha256 = base_model_sha256(pretrained)
        self.image_size, self.val_seed = int(image_size), int(val_seed)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.strict_loading = False  # its checkpoints hold the LoRA weights only

    # ----------------------------------------------------------------------------------------- the pieces
    @property
    def config(self) -> SimpleNamespace:
        """What the synthetic-set writer reads of a generator: its side."""
        return SimpleNamespace(sample_size=self.image_size)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def prompt_embeddings(self, batch_size: int) -> torch.Tensor:
        """The CLIP embedding of the prompt, ``[batch_size, tokens, dim]``."""
        ids = self.tokenizer(
            [self.prompt], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)  # fmt: skip
        with torch.no_grad():
            embedding = self.text_encoder(ids)[0]
        return embedding.expand(batch_size, -1, -1)

    def latents(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """The frozen VAE's latents of the RGB-packed pairs (a draw from its posterior, scaled)."""
        with torch.no_grad():
            posterior = self.vae.encode(
                pack_rgb(batch["image"], batch["mask"]).to(self.vae.dtype)
            ).latent_dist
        return posterior.sample(generator=generator) * self.vae.config.scaling_factor

    def diffusion_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the LoRA-adapted UNet's output against the target of the scheduler's ``prediction_type``."""
        latents = self.latents(batch, generator)
        num_t = int(self.noise_scheduler.config.num_train_timesteps)
        noise, t = draw_training_noise(latents, num_t, self.device, generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        target = regression_target(self.noise_scheduler, latents, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=self.prompt_embeddings(len(latents))).sample
        return F.mse_loss(pred.float(), target.float())

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch)
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(batch["image"])
        )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch, torch_generator(self.val_seed, batch_idx))
        self.log(
            "val/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True
        )
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return optimizers_with_schedule(
            self.optimizer_factory, self.lr_scheduler_factory, self.lora_parameters(), self.trainer
        )

    # ------------------------------------------------------------------------------------------- sampling
    @torch.inference_mode()
    def sample_pairs(
        self,
        scheduler: SchedulerMixin,
        seeds: Sequence[int],
        steps: int,
        class_labels: Sequence[int | None] | None = None,
        guidance_scale: float = 1.0,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pairs ``[B,2,S,S]`` in [-1, 1] for ``seeds`` (one generator each): denoised latents decoded by the VAE,
        the mask read from the third channel. Fixed prompt, no classes, no given masks."""
        if masks is not None:
            raise ValueError("the paper's generator draws image and mask together: no mask_conditioned mode")
        if class_labels is not None and any(c is not None for c in class_labels):
            raise ValueError("the paper's generator has no classes (class_label=null)")
        if guidance_scale != 1.0:
            raise ValueError("the paper's generator is trained on one prompt: no classifier-free guidance")
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        side = self.image_size // factor
        shape = (len(seeds), int(self.unet.config.in_channels), side, side)
        gens = generators(seeds)
        x = (
            randn_tensor(shape, generator=gens, device=self.device, dtype=self.unet.dtype)
            * scheduler.init_noise_sigma
        )
        context = self.prompt_embeddings(len(seeds))
        scheduler.set_timesteps(steps, device=self.device)
        for t in scheduler.timesteps:
            out = self.unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=context).sample
            x = scheduler.step(out, t, x, **step_generators(scheduler, gens)).prev_sample
        rgb = self.vae.decode(x / self.vae.config.scaling_factor).sample.clamp(-1, 1)
        return unpack_rgb(rgb.float())

    def sample(self, n: int, seed: int = 0, sampler: str = "dpmsolver++", steps: int | None = None,
               class_labels: Sequence[int | None] | None = None, guidance_scale: float = 1.0,
               masks: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``n`` pairs ``[n,2,S,S]``, pair ``i`` from ``derive_seed(seed, i)`` (the sample grid's call)."""
        scheduler, steps = make_sampler(sampler, self.noise_scheduler.config, steps)
        return self.sample_pairs(
            scheduler, [derive_seed(seed, i) for i in range(n)], steps, class_labels, guidance_scale, masks
        )

    # ----------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The LoRA weights and what rebuilds the rest (the base model's path), never the base weights."""
        lora = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in lora}
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "generator": GENERATOR_KIND,
            "pretrained": self.pretrained,
            "pretrained_sha256": self.pretrained_sha256,
            "prompt": self.prompt,
            "lora_rank": self.lora_rank,
            "image_size": self.image_size,
            "noise_scheduler_config": dict(self.noise_scheduler.config),
            "num_classes": 0,
            "class_key": None,
        }

    @classmethod
    def from_checkpoint(
        cls, contents: dict[str, Any], device: str | torch.device = "cpu"
    ) -> PaperLoraGenerator:
        """The trained generator from a checkpoint's plain data (the base model's path, the prompt, the rank and the
        LoRA weights; no config is instantiated), in eval mode without gradients."""
        extra = contents[CHECKPOINT_KEY]
        module = cls(extra["pretrained"], torch.optim.AdamW, str(extra["prompt"]), int(extra["lora_rank"]),
                     int(extra["image_size"]))  # fmt: skip
        recorded = extra.get("pretrained_sha256")
        if recorded is None:
            log.warning("this checkpoint records no hash of its base model %s: that it is the one the LoRA weights "
                        "were trained on is not checked", extra["pretrained"])  # fmt: skip
        elif recorded != module.pretrained_sha256:
            raise ValueError(f"the base model at {extra['pretrained']} is not the one these LoRA weights were trained "
                             f"on (sha256 {module.pretrained_sha256[:12]}..., recorded {str(recorded)[:12]}...)")  # fmt: skip
        lora = {n for n, p in module.named_parameters() if p.requires_grad}
        problem = (
            f"the checkpoint's LoRA weights do not fit {extra['pretrained']} with rank {extra['lora_rank']}"
        )
        try:
            unexpected = module.load_state_dict(contents["state_dict"], strict=False).unexpected_keys
        except RuntimeError as err:  # a shape that differs
            raise ValueError(f"{problem}: {str(err).splitlines()[-1].strip()}") from err
        absent = sorted(lora - set(contents["state_dict"]))
        if unexpected or absent:
            raise ValueError(f"{problem}: unexpected {unexpected[:3]}, absent {absent[:3]}")
        return module.to(device).eval().requires_grad_(False)
