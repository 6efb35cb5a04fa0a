"""SAM's mask decoder for a batch of images with one prompt each, in one call.

``MaskDecoder.predict_masks`` decodes one image with several prompts: it repeats the image embedding once per
prompt (``repeat_interleave``), so a batch of B images must be decoded image by image. :func:`decode_batch`
runs the same computation (the same modules, weights and checkpoint format) on B (image, prompt) pairs at
once; it equals the per-image path to float tolerance, forward and backward.

The output upscaling runs channels-last (:func:`upscaled_masks`): the transformer's image tokens are already
``[B, h*w, C]``, each 2x2 stride-2 transposed convolution is one matrix product on them, ``LayerNorm2d`` is
the fused layer norm over the last axis, and only the small mask tensor is put back in image order. The
official path transposes the tokens to NCHW and runs LayerNorm2d as eight elementwise passes over the
largest tensors of the step; on a CPU that made batching slower than the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MaskDecoder
from torch import nn


def decode_batch(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks and IoU predictions of B (image, prompt) pairs.

    Args:
        decoder: the official ``MaskDecoder`` (its submodules are called as they are).
        image_embeddings: ``[B, C, h, w]``, one per prompt.
        image_pe: ``[1, C, h, w]`` dense positional encoding (``PromptEncoder.get_dense_pe()``).
        sparse_prompt_embeddings: ``[B, T, C]``.
        dense_prompt_embeddings: ``[B, C, h, w]``.
        multimask_output: the 3 multimask outputs instead of the single mask.

    Returns:
        ``(masks [B, M, 4h, 4w] low-res logits, iou_pred [B, M])`` with M = 1 (or 3), as ``MaskDecoder.forward``.
    """
    n = sparse_prompt_embeddings.shape[0]
    if image_embeddings.shape[0] != n or dense_prompt_embeddings.shape[0] != n:
        raise ValueError(
            f"one prompt per image: got {image_embeddings.shape[0]} embeddings, {n} sparse and "
            f"{dense_prompt_embeddings.shape[0]} dense prompt embeddings"
        )
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
    # no repeat: embedding i belongs to prompt i. Channels-last, so that the transformer's
    # flatten(2).permute(0, 2, 1) gives contiguous [B, h*w, C] tokens (from NCHW, a transposed view that every
    # projection would copy)
    src = (image_embeddings + dense_prompt_embeddings).contiguous(memory_format=torch.channels_last)
    pos_src = image_pe.contiguous(memory_format=torch.channels_last).expand(n, -1, -1, -1)
    hs, image_tokens = decoder.transformer(src, pos_src, tokens)  # image_tokens: [B, h*w, C]
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    chosen = slice(1, None) if multimask_output else slice(0, 1)
    # only the returned masks are computed; every hypernetwork stays in the graph (zero gradients, as officially)
    masks = upscaled_masks(decoder.output_upscaling, image_tokens, hyper_in[:, chosen], tuple(src.shape[-2:]))
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    return masks, iou_pred[:, chosen]


def upscaled_masks(
    upscaling: nn.Sequential, image_tokens: torch.Tensor, hyper_in: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """``MaskDecoder``'s ``output_upscaling`` and hypernetwork product, channels-last.

    Args:
        upscaling: the decoder's ``output_upscaling`` (ConvTranspose2d 2x2/2, LayerNorm2d, activation,
            ConvTranspose2d 2x2/2, activation), its parameters used as they are.
        image_tokens: ``[B, h*w, C]``, the transformer's image output.
        hyper_in: ``[B, M, C/8]``, the hypernetwork outputs of the M mask tokens.
        hw: ``(h, w)``, the embedding grid.

    Returns:
        mask logits ``[B, M, 4h, 4w]``.
    """
    conv1, norm, act1, conv2, act2 = _upscaling_parts(upscaling)
    b, (h, w), m = image_tokens.shape[0], hw, hyper_in.shape[1]
    # rows: (batch, i, j); columns: (a, b, channel), output pixel (2i + a, 2j + b)
    x = _transposed_conv_2x2(conv1, image_tokens.reshape(b * h * w, -1))
    x = act1(
        F.layer_norm(x.view(-1, conv1.out_channels), (conv1.out_channels,), norm.weight, norm.bias, norm.eps)
    )
    # rows: (batch, i, j, a, b); columns: (c, d, channel), output pixel (4i + 2a + c, 4j + 2b + d)
    x = act2(_transposed_conv_2x2(conv2, x))
    masks = x.view(b, -1, conv2.out_channels) @ hyper_in.transpose(1, 2)  # [B, h*w*16, M]
    masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)  # (B, M, i, a, c, j, b, d)
    return masks.reshape(b, m, 4 * h, 4 * w)


def _transposed_conv_2x2(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution on pixels as rows ``[N, C_in]`` -> ``[N, 4 * C_out]``, the four
    output pixels ``(a, b)`` of each input pixel in row-major order, channels last."""
    # weight [c_in, c_out, a, b] -> [c_in, (a, b, c_out)]; the bias once per output pixel
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * conv.out_channels)
    return torch.addmm(conv.bias.repeat(4), x, weight)


def _upscaling_parts(upscaling: nn.Sequential) -> tuple[nn.Module, ...]:
    """The five modules of SAM's ``output_upscaling``, checked (a changed layout would decode wrongly)."""
    parts = tuple(upscaling)
    layout_ok = (
        len(parts) == 5
        and isinstance(parts[1], LayerNorm2d)
        and all(
            isinstance(c, nn.ConvTranspose2d)
            and c.kernel_size == (2, 2)
            and c.stride == (2, 2)
            and c.padding == c.output_padding == (0, 0)
            and c.dilation == (1, 1)
            and c.groups == 1
            and c.bias is not None
            for c in (parts[0], parts[3])
        )
    )
    if not layout_ok:
        raise TypeError(
            "decode_batch expects SAM's output_upscaling (ConvTranspose2d 2x2 stride 2, LayerNorm2d, "
            f"activation, ConvTranspose2d 2x2 stride 2, activation), got {upscaling}"
        )
    return parts
