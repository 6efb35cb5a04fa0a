"""SAM's mask decoder for a batch of images with one prompt each, in one call.

``MaskDecoder.predict_masks`` decodes one image with several prompts: it repeats the image embedding once per
prompt (``repeat_interleave``), so a batch of B images must be decoded image by image. :func:`decode_batch`
runs the same computation (the same modules, weights and checkpoint format) on B (image, prompt) pairs at
once; it equals the per-image path to float tolerance, forward and backward.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.mask_decoder import MaskDecoder


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
    src = image_embeddings + dense_prompt_embeddings  # no repeat: embedding i belongs to prompt i
    pos_src = image_pe.expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    chosen = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, chosen], iou_pred[:, chosen]
