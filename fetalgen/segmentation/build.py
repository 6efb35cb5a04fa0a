"""Build SAM from the ``segment-anything`` classes: a registry by name, checkpoints, input size, freezing.

Registry (``SAM_ARCHS``): ``vit_b``, ``vit_l``, ``vit_h`` (the official sizes of ``build_sam.py``),
``medsam`` (ViT-B; MedSAM's checkpoint has SAM's key format) and ``tiny`` (a small random-init ViT for CPU tests).

A checkpoint is a state dict in SAM's key format (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
When ``image_size`` differs from the size the checkpoint was trained at (1024), the absolute position embedding
is resized bicubically and the relative position tables of the global-attention blocks linearly (the windowed
blocks keep their window size, so their tables fit unchanged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from fetalgen.segmentation.lora import add_lora, merge_lora
from fetalgen.utils.checkpoints import WRITERS, checkpoint_kind, read_weights

log = logging.getLogger(__name__)

TRAINABLE = ("decoder", "decoder_prompt", "lora")


@dataclass(frozen=True)
class SamArch:
    """Architecture hyper-parameters of one SAM size (names follow ``segment_anything.build_sam``)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256


_VIT_B = SamArch(768, 12, 12, (2, 5, 8, 11))
# the tiny random-init encoder (64-dim, 2 blocks) that runs on a CPU in seconds, shared by the tiny and small sizes
_TINY_ENCODER = {
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": (1,),
    "window_size": 4,
}
SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": _VIT_B,
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    "medsam": _VIT_B,
    "tiny": SamArch(
        **_TINY_ENCODER,
        prompt_embed_dim=64,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=256,
        decoder_num_heads=2,
        iou_head_hidden_dim=64,
    ),
    # the tiny encoder with SAM's own mask decoder (5.1 M parameters, 4.1 M in the decoder): the cpu preset's
    # size, whose decoder learns to use a box (tiny's 64-dim one barely does: its Dice hardly changes with a
    # tight box)
    "small": SamArch(**_TINY_ENCODER),
}


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the architecture; the message lists the offending keys."""


def build_sam(
    model_type: str, checkpoint: str | Path | None = None, image_size: int = 1024, seed: int | None = None
) -> Sam:
    """SAM of a registry size, random-initialised or loaded from a checkpoint, in eval mode.

    Args:
        model_type: a key of ``SAM_ARCHS``.
        checkpoint: state dict file in SAM's key format (read with ``weights_only=True``); None: random init.
        image_size: encoder input size (a multiple of the patch size; 1024 for the pretrained encoders).
        seed: seed of the random initialisation (None: the global torch RNG).

    Returns:
        ``segment_anything.modeling.Sam`` on the CPU.
    """
    if model_type not in SAM_ARCHS:
        raise ValueError(f"unknown SAM model_type {model_type!r}; choose one of {', '.join(SAM_ARCHS)}")
    arch = SAM_ARCHS[model_type]
    if checkpoint is not None:
        _require_file(Path(checkpoint))  # before minutes of random init of a large encoder
    if image_size % arch.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {arch.patch_size}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        sam = _assemble(arch, image_size)
    if checkpoint is not None:
        load_sam_weights(sam, checkpoint, name=model_type)
    return sam.eval()


def _assemble(arch: SamArch, image_size: int) -> Sam:
    """The four SAM components wired as in ``segment_anything.build_sam._build_sam``."""
    grid = image_size // arch.patch_size
    dim = arch.prompt_embed_dim
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam_weights(sam: Sam, checkpoint: str | Path, name: str = "SAM") -> None:
    """Load a SAM-format state dict into ``sam``, resizing position embeddings to its input size.

    Raises:
        FileNotFoundError: the file is missing (``make weights`` downloads the official ViT-B one).
        CheckpointMismatchError: keys missing, unexpected or of the wrong shape (listed in the message).
    """
    path = Path(checkpoint)
    _require_file(path)
    state = read_weights(path)
    kind = checkpoint_kind(state)
    if kind == "diffusion":
        raise CheckpointMismatchError(
            f"{path}: a {WRITERS[kind]} checkpoint (the generator), but SAM weights are needed here"
        )
    if kind == "finetune":  # a fetalgen-finetune checkpoint: its SAM, LoRA adapters merged if any
        state = sam_state_from_finetune(state)
    for wrapper in ("model", "state_dict"):  # training checkpoints that wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: not a state dict (got {type(state).__name__})")
    state = resize_position_embeddings(state, sam)
    check_state_dict(sam, state, source=f"{path} ({name})")
    sam.load_state_dict(state)
    log.info("Loaded %s weights from %s (image_size %d)", name, path, sam.image_encoder.img_size)


def sam_state_from_finetune(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The SAM of a ``fetalgen-finetune`` checkpoint as a plain ``segment-anything`` state dict (LoRA merged)."""
    state = {k[len("sam.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("sam.")}
    if any(k.endswith(".lora_a") for k in state):
        state = merge_lora(state, checkpoint.get("hyper_parameters", {}).get("lora_alpha"))
    return state


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {path} not found: `make weights` downloads the official ViT-B checkpoint "
            "(sam_vit_b_01ec64.pth) into checkpoints/; other weights (ViT-L/H, MedSAM) go there by hand, "
            "or set model.sam.checkpoint=<file> (null: random init)"
        )


def resize_position_embeddings(state: dict[str, torch.Tensor], sam: Sam) -> dict[str, torch.Tensor]:
    """Resize ``image_encoder.pos_embed`` (bicubic) and ``rel_pos_h/w`` (linear) to the shapes of ``sam``.

    Only tensors whose shape differs in the spatial/length dimension are touched; anything else is left for
    :func:`check_state_dict` to report.
    """
    target = sam.state_dict()
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want.shape or value.ndim != want.ndim:
            continue
        if key == "image_encoder.pos_embed" and value.shape[-1] == want.shape[-1]:  # [1, H, W, C]
            grid = value.permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=want.shape[1:3], mode="bicubic", align_corners=False)
            out[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif (
            key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and value.shape[-1] == want.shape[-1]
        ):  # [L, C]
            table = F.interpolate(
                value.T[None].float(), size=want.shape[0], mode="linear", align_corners=False
            )
            out[key] = table[0].T.to(value.dtype)
    return out


def check_state_dict(
    model: nn.Module, state: dict[str, Any], source: str = "checkpoint", show: int = 5
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly the keys and shapes of ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
            parts.append(f"{len(keys)} {what} keys: {', '.join(keys[:show])}{more}")
    raise CheckpointMismatchError(f"{source} does not fit the architecture: " + "; ".join(parts))


def set_trainable(
    sam: Sam, trainable: str = "decoder", lora_rank: int = 4, lora_alpha: float | None = None
) -> list[nn.Module]:
    """Freeze SAM except the parts named by ``trainable``; returns the frozen modules (keep them in eval mode).

    - ``"decoder"``: the mask decoder only (the paper's default);
    - ``"decoder_prompt"``: mask decoder + prompt encoder;
    - ``"lora"``: LoRA adapters of rank ``lora_rank`` on every encoder attention ``qkv`` + the mask decoder;
      the rest of the encoder stays frozen (but the encoder is no longer constant: no embedding cache).

    Parameters that box-prompted single-mask training never reaches stay frozen, since DDP needs a gradient
    for every trainable parameter: the decoder's IoU prediction head, and the prompt encoder's point,
    not-a-point and mask-input embeddings.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable {trainable!r}; choose one of {', '.join(TRAINABLE)}")
    sam.requires_grad_(False)
    sam.mask_decoder.requires_grad_(True)
    sam.mask_decoder.iou_prediction_head.requires_grad_(False)
    frozen: list[nn.Module] = [sam.image_encoder, sam.prompt_encoder]
    if trainable == "decoder_prompt":
        pe = sam.prompt_encoder
        pe.point_embeddings[2].requires_grad_(True)  # box corners: top-left, bottom-right
        pe.point_embeddings[3].requires_grad_(True)
        pe.no_mask_embed.requires_grad_(True)
        frozen = [sam.image_encoder]
    elif trainable == "lora":
        add_lora(sam.image_encoder, rank=lora_rank, alpha=lora_alpha)
        frozen = [sam.prompt_encoder]
    for module in frozen:
        module.eval()
    return frozen


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
