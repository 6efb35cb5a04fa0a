"""Image features for realism (KID, FID) and nearest-neighbour checks (the :class:`~fetalgen.metrics.fidelity.
Features` protocol), named in every result; chosen by ``_target_`` in ``conf/fidelity/features/``:

* :func:`sam_features` (default): the mean-pooled image-encoder embedding of a SAM checkpoint, the network fetalgen
  fine-tunes, run on the images as the segmenter sees them (:func:`~fetalgen.segmentation.preprocess.to_encoder_input`).
* :class:`InceptionFeatures`: torchmetrics' Inception-v3 pool features (2048-d), the usual FID space; needs
  ``torch-fidelity`` and its weights (downloaded by torch-fidelity on first use).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from fetalgen.segmentation.cache import EmbeddingCache, encode_in_chunks
from fetalgen.segmentation.preprocess import at_side, to_encoder_input

log = logging.getLogger(__name__)


class SamFeatures:
    """Mean-pooled SAM image-encoder embeddings, ``batch_size`` images per encoder call (the peak memory: ViT-B
    at 1024 px holds ~2.3 GiB of activations per image).

    With a ``cache`` (a disk :class:`~fetalgen.segmentation.cache.EmbeddingCache`), images are first brought to
    the encoder's side (:func:`~fetalgen.segmentation.preprocess.at_side`, as the box judge brings them) and their
    embeddings read from or written to it: the judge's two passes over the same images encode each image once.
    """

    def __init__(self, sam: torch.nn.Module, name: str, batch_size: int = 2, device: str | torch.device = "cpu",
                 cache: EmbeddingCache | None = None) -> None:  # fmt: skip
        self.sam = sam.eval().to(device)
        self.name, self.batch_size, self.device = name, batch_size, torch.device(device)
        self.cache = cache
        if cache is not None:
            cache.bind(self.sam)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(to_encoder_input(self.sam, x))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not len(images):
            return torch.zeros(0, self.sam.prompt_encoder.embed_dim)
        images = images.to(self.device)
        if self.cache is not None:
            return (
                self.cache.embed(at_side(images, self.sam.image_encoder.img_size), self.encode)
                .mean(dim=(-2, -1))
                .cpu()
            )
        return encode_in_chunks(
            lambda x: self.encode(x).mean(dim=(-2, -1)).float(), images, self.batch_size
        ).cpu()


class InceptionFeatures:
    """torchmetrics' ``NoTrainInceptionV3`` pool features of the images, replicated to RGB at 299 px."""

    name = "inception-v3 (torch-fidelity, pool 2048)"

    def __init__(self, batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).to(device)
        except (ImportError, ModuleNotFoundError, RuntimeError, OSError) as err:
            raise RuntimeError(
                "fidelity/features=inception needs torch-fidelity (pip install torch-fidelity) and its "
                f"Inception weights (downloaded on first use): {err}; or use fidelity/features=sam_vit_b"
            ) from err
        self.batch_size, self.device = batch_size, torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(self.device).expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net((x * 255).round().to(torch.uint8)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 2048)


def sam_features(
    model_type: str = "vit_b",
    checkpoint: str | Path | None = None,
    image_size: int = 1024,
    seed: int = 0,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> SamFeatures:
    """The mean-pooled encoder of a SAM size (``checkpoint`` None: random init, a smoke test only; ``"pretrained"``:
    the weights that ship with the size, LiteMedSAM's); ``cache_dir``: a disk embedding cache (:class:`SamFeatures`).

    Raises:
        FileNotFoundError: a checkpoint that is not there (with the ways out).
    """
    from fetalgen.segmentation.build import PRETRAINED, build_sam

    if checkpoint and checkpoint != PRETRAINED and not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"fidelity.features.checkpoint {checkpoint} not found: `make weights` downloads SAM ViT-B; or "
            "fidelity/features=sam_tiny (random init: a smoke test only), or fidelity.enabled=false"
        )
    sam = build_sam(model_type, checkpoint=checkpoint, image_size=int(image_size), seed=int(seed))
    source = (
        "pretrained" if checkpoint == PRETRAINED else Path(checkpoint).name if checkpoint else "random init"
    )
    name = f"sam-{model_type} encoder ({source}, {image_size} px, mean-pooled)"
    if not checkpoint:
        log.warning("fidelity features from a randomly initialised SAM (%s): only a smoke test", model_type)
    cache = EmbeddingCache("disk", cache_dir, encode_batch_size=1) if cache_dir else None
    return SamFeatures(sam, name, batch_size=batch_size, device=device, cache=cache)
