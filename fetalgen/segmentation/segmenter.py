"""Segment fetal heads and measure them from Python; ``fetalgen-predict`` runs the same object.

Example (a random tiny model, as the tests run it; give ``ckpt_path=`` a ``fetalgen-finetune`` checkpoint)::

    >>> import numpy as np
    >>> from fetalgen import load_segmenter
    >>> segmenter = load_segmenter(model="tiny", allow_random_weights=True, image_size=64)
    >>> image = np.zeros((120, 160), np.uint8)
    >>> heads = segmenter.predict(image, pixel_size_mm=0.15)
    >>> heads[0].mask.shape, heads[0].prompt
    ((120, 160), 'auto')

Geometry: an image is padded bottom/right to a square and resized to the working size (as in training), the
mask predicted there, brought back to the image's own size (a linear resize of the logits, thresholded), and the
ellipse fitted to that image-size mask, so HC/BPD/OFD carry no working-size rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fetalgen.data.cases import implausible
from fetalgen.data.io import load_image
from fetalgen.data.transforms import pad_resize
from fetalgen.metrics.biometry import Ellipse, ellipse_circumference, fit_ellipse
from fetalgen.segmentation.predictor import (
    AUTO_ROUNDS,
    BoxPrompting,
    LoadedModel,
    SamBoxPredictor,
    load_finetuned,
    require_weights,
)
from fetalgen.utils.device import resolve_device

MIN_IMAGE_SIDE = 16  # smaller images hold no head a model can find (and no working-size detail)
DEFAULT_IMAGE_SIZE = 256
TINY_ENCODER_SIZE = 128

Box = Sequence[float]


@dataclass(frozen=True)
class Working:
    """An image brought to the working size: the square working image, its scale and the original shape."""

    image: np.ndarray  # uint8 S x S
    scale: float  # image pixels per working pixel
    shape: tuple[int, int]  # (H, W) of the image


def to_working(image: np.ndarray, size: int) -> Working:
    """Pad and resize ``image`` (uint8 HxW) as the data layer does for training (:func:`pad_resize`)."""
    working, _, scale = pad_resize(image, np.zeros(image.shape, bool), size)
    return Working(working, scale, image.shape[:2])


def logits_to_image(logits: np.ndarray, work: Working, threshold: float = 0.0) -> np.ndarray:
    """Working-size mask logits (or a 0/1 mask with ``threshold=0.5``) -> a bool mask of the image's own size:
    a linear resize of the square, thresholded, then the padding cropped (a smooth outline, not working pixels)."""
    side = round(work.scale * logits.shape[0])
    big = cv2.resize(logits.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR) > threshold
    h, w = work.shape
    return np.ascontiguousarray(big[:h, :w])


def check_box(box: Box, shape: tuple[int, int], name: str) -> np.ndarray:
    """``box`` (XYXY, image pixels) as float32 after checking it: finite, x1 > x0, y1 > y0, overlapping the image.

    Raises:
        ValueError: naming the image (``name``) and the box.
    """
    array = np.asarray(box, np.float64)
    h, w = shape
    if array.shape != (4,) or not np.isfinite(array).all():
        raise ValueError(f"{name}: box {list(box)} needs four finite numbers x0, y0, x1, y1")
    x0, y0, x1, y1 = array
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{name}: box {list(box)} needs x1 > x0 and y1 > y0")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"{name}: box {list(box)} lies outside the {w} x {h} image")
    return array.astype(np.float32)


ImageLike = Any  # a path, a PIL image, a numpy array or a torch tensor (:func:`as_gray_image`)


def is_single_image(images: Any) -> bool:
    """Whether ``predict`` was given one image rather than a list (an array or tensor is always one image)."""
    return isinstance(images, (np.ndarray, torch.Tensor, str, Path)) or hasattr(images, "convert")  # PIL


def as_gray_image(image: ImageLike, name: str) -> np.ndarray:
    """An API image as uint8 HxW gray: a file (:func:`~fetalgen.data.io.load_image`); a PIL image (its ``L``
    conversion, ITU-R 601 luma); an array or tensor, uint8 0-255 or float 0-1, HxW, HxWx1, or HxWx3 / HxWx4 in RGB(A)
    order (weighted to gray as PIL does). Anything else is a ValueError naming ``name``."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("L"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"{name}: an image is H x W (gray) or H x W x 3/4 (RGB/RGBA), got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ValueError(f"{name}: a float image must hold finite values in [0, 1] "
                             f"(got {np.nanmin(array):.3g} to {np.nanmax(array):.3g}); give uint8 for 0-255")  # fmt: skip
        array = np.rint(array * 255)
    elif array.dtype != np.uint8 and not (
        np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= 255
    ):
        raise ValueError(f"{name}: needs uint8 (0-255) or float (0-1) pixels, got {array.dtype}")
    array = array.astype(np.uint8)
    if array.ndim == 3:
        array = cv2.cvtColor(
            np.ascontiguousarray(array), cv2.COLOR_RGBA2GRAY if array.shape[2] == 4 else cv2.COLOR_RGB2GRAY
        )
    return np.ascontiguousarray(array)


def check_input(image: np.ndarray, box: Box | None, name: str) -> np.ndarray | None:
    """What the segmenter refuses, before any work: an image that is not uint8 HxW or is too small, a box that
    does not fit it. Returns the checked box (None: the automatic prompt); ValueError naming ``name``."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{name}: needs a uint8 grayscale image (H x W), got {image.dtype} {image.shape}")
    if min(image.shape) < MIN_IMAGE_SIDE:
        raise ValueError(f"{name}: {image.shape[1]} x {image.shape[0]} image is too small to segment "
                         f"(at least {MIN_IMAGE_SIDE} px a side)")  # fmt: skip
    return None if box is None else check_box(box, image.shape, name)


def check_pixel_size(value: float | None, name: str) -> float:
    """A pixel size in mm (nan when unknown: ``None`` or nan); zero, negative, infinite or implausible
    (:data:`~fetalgen.data.cases.PLAUSIBLE_MM`) is a ValueError."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name}: pixel size must be a number of mm, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: pixel size {value} mm must be a finite positive number")
    if why := implausible(float(value), "pixel size"):
        raise ValueError(f"{name}: {why}")
    return float(value)


@dataclass(frozen=True)
class HeadMeasurement:
    """One image's result: the mask at the image's own size, the prompt and its box, the fitted ellipse (image
    pixels, None without a fit) and the head biometry in pixels and, with a pixel size, in mm."""

    mask: np.ndarray  # bool HxW
    box: np.ndarray  # XYXY in image pixels: the given box, or the one the automatic prompt settled on
    prompt: str  # "box" | "auto"
    ellipse: Ellipse | None
    pixel_size_mm: float = math.nan

    @property
    def status(self) -> str:
        if self.ellipse is not None:
            return "ok"
        return "no head found" if not self.mask.any() else "no ellipse fit"

    def biometry_px(self) -> dict[str, float]:
        """Centre, semi-axes, HC, BPD and OFD in image pixels (nan without a fit)."""
        e = self.ellipse or Ellipse(math.nan, math.nan, math.nan, math.nan, math.nan)
        hc = ellipse_circumference(e.semi_major, e.semi_minor) if self.ellipse is not None else math.nan
        return {
            "center_x": e.cx, "center_y": e.cy, "semi_major": e.semi_major, "semi_minor": e.semi_minor,
            "hc": hc, "bpd": 2 * e.semi_minor, "ofd": 2 * e.semi_major,
        }  # fmt: skip

    @property
    def hc_mm(self) -> float:
        return self.biometry_px()["hc"] * self.pixel_size_mm

    @property
    def bpd_mm(self) -> float:
        return self.biometry_px()["bpd"] * self.pixel_size_mm

    @property
    def ofd_mm(self) -> float:
        return self.biometry_px()["ofd"] * self.pixel_size_mm


class Segmenter:
    """A fine-tuned SAM that segments whole images: box prompts where given, else the automatic prompt."""

    def __init__(self, predictor: BoxPrompting, image_size: int, auto_rounds: int = AUTO_ROUNDS) -> None:
        self.predictor = predictor
        self.image_size = int(image_size)
        self.auto_rounds = auto_rounds

    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        boxes: Box | Sequence[Box | None] | None = None,
        pixel_size_mm: float | Sequence[float | None] | None = None,
        names: Sequence[str] | None = None,
        batch_size: int = 8,
    ) -> list[HeadMeasurement]:
        """Segment and measure ``images`` (one or a list), ``batch_size`` images per encoder batch.

        Args:
            images: one image or a list; an image is a file path, a PIL image, or an array / tensor: uint8 (0-255)
                or float (0-1), HxW gray or HxWx3 / HxWx4 RGB(A) (:func:`as_gray_image`).
            boxes: per image an XYXY box in image pixels or None (the automatic prompt); for one image, its box.
            pixel_size_mm: per image (or one for all) the pixel size; None: no mm figures (nan).
            names: per image a name for error messages (default: the file name or ``image <i>``).
            batch_size: images per encoder call (peak memory).
        """
        single = is_single_image(images)
        if not single and not isinstance(images, Iterable):
            raise TypeError(f"images: one image (a file path, a PIL image, an array or a tensor) or a list of "
                            f"them, got {type(images).__name__}")  # fmt: skip
        items = [images] if single else list(images)
        names = list(names) if names is not None else [
            str(x) if isinstance(x, (str, Path)) else f"image {i}" for i, x in enumerate(items)
        ]  # fmt: skip
        if len(names) != len(items):
            raise ValueError(f"{len(items)} image(s) but {len(names)} name(s)")
        if single:  # one image: ``boxes`` is its box (or None)
            boxes = [boxes]
        elif boxes is None:
            boxes = [None] * len(items)
        elif len(boxes) == 4 and all(isinstance(v, (int, float, np.number)) for v in boxes):
            raise ValueError(
                "boxes: one box for a list of images; give a list with a box (or None) per image"
            )
        one_size = not isinstance(pixel_size_mm, Sequence) or isinstance(
            pixel_size_mm, str
        )  # "0.1": refused below
        sizes = [pixel_size_mm] * len(items) if one_size else pixel_size_mm
        if not len(boxes) == len(sizes) == len(items):
            raise ValueError(f"{len(items)} image(s), {len(boxes)} box(es), {len(sizes)} pixel size(s)")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        sizes = [check_pixel_size(s, n) for s, n in zip(sizes, names, strict=True)]
        arrays = [as_gray_image(x, n) for x, n in zip(items, names, strict=True)]
        masks = []
        for start in range(0, len(arrays), batch_size):
            part = slice(start, start + batch_size)
            masks += self.segment(arrays[part], list(boxes[part]), names[part])
        return [
            HeadMeasurement(mask, box, prompt, fit_ellipse(mask), size)
            for (mask, box, prompt), size in zip(masks, sizes, strict=True)
        ]

    def segment(
        self, images: list[np.ndarray], boxes: list[Box | None], names: list[str]
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """Per image (uint8 HxW): the bool mask at the image's size, the box (image pixels) and the prompt."""
        given_boxes = [check_input(im, b, n) for im, b, n in zip(images, boxes, names, strict=True)]
        works = [to_working(image, self.image_size) for image in images]
        tensor = torch.from_numpy(np.stack([w.image for w in works])).float().div(255.0)[:, None]
        embedded = self.predictor.embed(tensor)
        given = [i for i, b in enumerate(given_boxes) if b is not None]
        automatic = [i for i, b in enumerate(given_boxes) if b is None]
        working_boxes = np.zeros((len(images), 4), np.float32)
        if automatic:
            working_boxes[automatic] = self.predictor.auto_boxes(embedded.select(automatic), self.auto_rounds)
        for i in given:
            working_boxes[i] = np.clip(given_boxes[i] / works[i].scale, 0, self.image_size - 1)
        logits = self.predictor.logits(embedded, torch.from_numpy(working_boxes)[None])[0]
        out = []
        for i, work in enumerate(works):
            mask = logits_to_image(logits[i], work, self.predictor.threshold)
            box = given_boxes[i] if i in given else working_boxes[i] * work.scale
            out.append((mask, box, "box" if i in given else "auto"))
        return out


def load_segmenter(
    ckpt_path: str | Path | None = None,
    model: str = "vit_b",
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    auto_rounds: int = AUTO_ROUNDS,
    allow_random_weights: bool = False,
    seed: int = 0,
    encoder_size: int | None = None,
) -> Segmenter:
    """A :class:`Segmenter` from a ``fetalgen-finetune`` checkpoint, or from raw SAM weights.

    Args:
        ckpt_path: a ``fetalgen-finetune`` checkpoint (it carries the model and its working size).
        model: without a checkpoint, the SAM size (``lite_medsam | vit_b | vit_l | vit_h | medsam | tiny | small``).
        weights: without a checkpoint, the official weights file of ``model`` (``make weights``); None for
            ``lite_medsam``: its pretrained weights from the installed package (sha256-checked).
        device: ``cpu``, ``cuda``, ...; None: the GPU when there is one.
        image_size: the working side; None: the checkpoint's ``data.image_size``, else 256.
        allow_random_weights: allow a model with neither (random init; tests only).
        seed: the random init of a model without weights.
        encoder_size: without a checkpoint, the encoder's input side; None: the model's own (1024; 256 for
            ``lite_medsam``; 128 for ``tiny``, as ``conf/model/sam/tiny.yaml``).
    """
    from fetalgen.segmentation.build import PACKAGED_WEIGHTS, PRETRAINED, native_image_size

    if ckpt_path is None and weights is None and model in PACKAGED_WEIGHTS:
        weights = PRETRAINED
    require_weights(ckpt_path, weights, allow_random_weights)
    if ckpt_path is not None:
        loaded = load_finetuned(ckpt_path)
    else:
        from fetalgen.segmentation.build import build_sam
        from fetalgen.segmentation.module import SamFinetuneModule

        size = encoder_size or (TINY_ENCODER_SIZE if model == "tiny" else native_image_size(model))
        sam = build_sam(model, checkpoint=str(weights) if weights else None, image_size=size, seed=seed)
        loaded = LoadedModel(SamFinetuneModule(sam, optimizer=partial(torch.optim.AdamW)), None, None)
    return segmenter_for(loaded, image_size, device, auto_rounds)


def segmenter_for(
    loaded: LoadedModel,
    image_size: int | None = None,
    device: str | torch.device | None = None,
    auto_rounds: int = AUTO_ROUNDS,
) -> Segmenter:
    """The :class:`Segmenter` of a loaded model; the working size from ``image_size``, else its training run."""
    trained: dict[str, Any] = (loaded.config or {}).get("data", {})
    size = int(image_size or trained.get("image_size") or DEFAULT_IMAGE_SIZE)
    return Segmenter(SamBoxPredictor(loaded.module, resolve_device(device)), size, auto_rounds)
