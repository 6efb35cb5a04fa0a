"""SAM's input pipeline for our working images, and the way back for its mask logits.

Working images are the data layer's: grayscale float ``[B, 1, S, S]`` in [0, 1] (square: ``pad_resize`` pads),
boxes XYXY in pixels of the working image. SAM wants RGB 0-255, the longest side resized to the encoder size
``L``, normalised with ``sam.pixel_mean/std`` and padded to ``L x L`` (``Sam.preprocess``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


def resized_shape(sam: Sam, hw: tuple[int, int]) -> tuple[int, int]:
    """Size ``(h, w)`` of a working image of size ``hw`` after resizing its longest side to the encoder size."""
    return ResizeLongestSide.get_preprocess_shape(hw[0], hw[1], sam.image_encoder.img_size)


def at_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """Square images ``[B, 1, s, s]`` resized to ``side`` (bilinear): how the pretrained judges read small generated
    images, the same tensor for each of them, so their encodings are one cache entry."""
    return F.interpolate(images.float(), size=(side, side), mode="bilinear", align_corners=False)


def to_encoder_input(sam: Sam, images: torch.Tensor) -> torch.Tensor:
    """Working images ``[B, 1 or 3, H, W]`` in [0, 1] -> encoder input ``[B, 3, L, L]``, normalised and padded.

    The resize is ``ResizeLongestSide.apply_image_torch`` (bilinear, antialiased) with its size taken from
    ``H, W``: the released segment-anything 1.0 reads the size from the batch and channel dimensions instead
    (facebookresearch/segment-anything#218), so it is not called directly.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(images.shape)}")
    x = images.float().expand(-1, 3, -1, -1) * 255.0
    target = resized_shape(sam, tuple(x.shape[-2:]))
    if target != tuple(x.shape[-2:]):
        x = F.interpolate(x, target, mode="bilinear", align_corners=False, antialias=True)
    return sam.preprocess(x)


def boxes_to_encoder(sam: Sam, boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """XYXY boxes ``[B, 4]`` in working-image pixels -> the encoder's input frame (``apply_boxes_torch``)."""
    return ResizeLongestSide(sam.image_encoder.img_size).apply_boxes_torch(boxes, hw)


def logits_to_working(sam: Sam, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Low-res mask logits ``[B, 1, h, w]`` -> logits ``[B, 1, H, W]`` on the working image (``postprocess_masks``).

    Threshold at ``sam.mask_threshold`` (0) for a mask.
    """
    return sam.postprocess_masks(low_res, input_size=resized_shape(sam, hw), original_size=hw)
