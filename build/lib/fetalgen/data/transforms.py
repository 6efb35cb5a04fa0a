"""Resizing to the working resolution and the none/weak/strong augmentations (albumentations).

Geometric augmentations move image and mask together (mask interpolation nearest); photometric ones touch
the image only.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

STRENGTHS = ("none", "weak", "strong")


def pad_resize(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pad bottom/right with zeros to a square, then resize to ``size x size`` (isotropic).

    Args:
        image: uint8 HxW.
        mask: bool HxW.
        size: output side in pixels.

    Returns:
        ``(image uint8 SxS, mask bool SxS, scale)`` where ``scale = max(H, W) / size``: original pixels per
        working pixel, so the pixel size at working resolution is ``pixel_size_mm * scale``.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in size")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = image.shape[:2]
    side = max(h, w)
    sq_img = np.zeros((side, side), np.uint8)
    sq_img[:h, :w] = image
    sq_mask = np.zeros((side, side), np.float32)
    sq_mask[:h, :w] = mask
    interp = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    out_img = cv2.resize(sq_img, (size, size), interpolation=interp)
    # Area-average the mask, then threshold: the nearest-to-exact boundary at the new resolution.
    out_mask = cv2.resize(sq_mask, (size, size), interpolation=interp) >= 0.5
    return out_img, out_mask, side / size


def build_augmentation(strength: str, seed: int | None = None) -> A.Compose | None:
    """The augmentation pipeline for a strength.

    - ``none``: ``None`` (no augmentation).
    - ``weak`` (the paper's WA): horizontal flip, rotation up to 15 deg, brightness/contrast, Gaussian blur,
      Gaussian noise.
    - ``strong`` (SA): weak with rotation up to 45 deg instead, plus elastic deformation and coarse dropout.

    Args:
        strength: one of ``none``, ``weak``, ``strong``.
        seed: seed of the pipeline's own random state (albumentations ``Compose(seed=...)``).

    Returns:
        an ``A.Compose`` called as ``aug(image=uint8 HxW, mask=uint8 HxW)``, or ``None``.

    Raises:
        ValueError: unknown strength.
    """
    if strength not in STRENGTHS:
        raise ValueError(f"unknown augmentation strength {strength!r}; valid: {', '.join(STRENGTHS)}")
    if strength == "none":
        return None
    max_rot = 15 if strength == "weak" else 45
    border = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, mask_interpolation=cv2.INTER_NEAREST)
    transforms: list[A.BasicTransform] = [
        A.HorizontalFlip(p=0.5),
        A.Rotate(limit=max_rot, p=0.5, **border),
    ]
    if strength == "strong":
        transforms.append(A.ElasticTransform(alpha=30.0, sigma=5.0, p=0.3, **border))
    transforms += [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=0.3),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
    ]
    if strength == "strong":
        transforms.append(
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.05, 0.15),
                hole_width_range=(0.05, 0.15),
                fill=0,
                p=0.3,
            )
        )
    return A.Compose(transforms, seed=seed)
