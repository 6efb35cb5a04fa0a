"""A box-prompted judge of image-mask agreement: a pretrained SAM (LiteMedSAM) zero-shot, prompted with the tight box
of each mask. It learned what a head looks like from public medical images, on nobody's labels here, so it measures a
synthetic pair without the generator's own training pairs (:func:`fetalgen.metrics.agreement.boxed_agreement`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fetalgen.segmentation.build import build_sam, native_image_size
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.segmentation.preprocess import at_side
from fetalgen.segmentation.prompts import tight_box


class BoxJudge:
    """``judge(images [N, 1, s, s] in [0, 1], masks bool [N, s, s]) -> bool masks [N, s, s]``: each image segmented
    at the model's own input size in the tight box of its mask, the prediction brought back to ``s``.

    Args:
        model_type, checkpoint: the SAM (``lite_medsam`` with its packaged weights by default).
        device: where it runs.
        cache_dir: a disk embedding cache shared with fine-tuning runs (None: one in memory, so an image the judge
            prompts twice, with its own mask and with another's, is encoded once).
        batch_size: images per encoder call.
    """

    def __init__(self, model_type: str = "lite_medsam", checkpoint: str | None = "pretrained", device: str = "cpu",
                 cache_dir: str | Path | None = None, batch_size: int = 8) -> None:  # fmt: skip
        module = SamFinetuneModule(
            build_sam(model_type, checkpoint=checkpoint), optimizer=partial(torch.optim.AdamW)
        )
        storage = ("disk", cache_dir) if cache_dir else ("memory", None)
        self.predictor = SamBoxPredictor(module, device, cache=EmbeddingCache(*storage, encode_batch_size=1))
        self.size, self.batch_size = native_image_size(model_type), batch_size
        self.name = f"{model_type} zero-shot ({checkpoint or 'random init'} weights), tight box of each mask"

    def __call__(self, images: torch.Tensor, masks: np.ndarray) -> np.ndarray:
        side = int(images.shape[-1])
        up = at_side(images, self.size)
        big = F.interpolate(torch.from_numpy(np.asarray(masks, np.float32))[:, None], size=(self.size, self.size),
                            mode="nearest")[:, 0].numpy() > 0.5  # fmt: skip
        out = []
        for k in range(0, len(up), self.batch_size):
            chunk = big[k : k + self.batch_size]
            boxes = torch.from_numpy(np.stack([tight_box(m) for m in chunk]).astype(np.float32))
            predicted = self.predictor.predict(
                self.predictor.embed(up[k : k + self.batch_size]), boxes[None]
            )[0]
            out.append(F.interpolate(torch.from_numpy(predicted.astype(np.float32))[:, None], size=(side, side),
                                     mode="nearest")[:, 0].numpy() > 0.5)  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, side, side), bool)
