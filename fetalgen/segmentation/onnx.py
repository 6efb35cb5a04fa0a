"""A fine-tuned SAM as two ONNX models, with the contract of :class:`~fetalgen.segmentation.predictor.SamBoxPredictor`
(``pip install fetalgen[onnx]``: onnx, onnxscript; onnxruntime to run them).

* ``encoder.onnx``: ``images [B, 1, S, S]`` float32 working images in [0, 1] (the image padded bottom/right to a
  square and resized to the working side ``S``) -> ``embeddings [B, C, E, E]``. SAM's own preprocessing (resize to
  the encoder's input, normalisation, padding) is inside. LiteMedSAM's TinyViT reads its batch size with ``len(x)``,
  which the exporter fixes: its encoder takes one image per call (``B = 1``; :func:`encoder_batch_is_free`).
* ``decoder.onnx``: ``embeddings [B, C, E, E]`` and ``boxes [B, 4]`` (XYXY in working pixels, box ``i`` on image
  ``i``) -> ``logits [B, 1, S, S]`` on the working image; a pixel is in the head where its logit > 0. The prompt
  encoder and the mask decoder, single-mask output, as fetalgen trains and evaluates them.

segment-anything's own export (``scripts/export_onnx_model.py``, ``SamOnnxModel``) leaves the encoder out and, for
a box, returns the best of the multimask outputs; these keep fetalgen's single-mask semantics, so the ONNX models
give what ``fetalgen-predict`` gives (checked against PyTorch in tests/segmentation/test_onnx.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from fetalgen.segmentation.build import LiteMedSam
from fetalgen.segmentation.decoder import decode_batch
from fetalgen.segmentation.preprocess import logits_to_working, resized_shape, to_encoder_input

OPSET = 18


class OnnxEncoder(nn.Module):
    """Working images ``[B, 1, S, S]`` in [0, 1] -> image embeddings."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(to_encoder_input(self.sam, images))


class OnnxBoxDecoder(nn.Module):
    """Embeddings and one XYXY box per image (working pixels) -> mask logits on the ``size`` x ``size`` working image."""

    def __init__(self, sam: Sam, size: int) -> None:
        super().__init__()
        self.sam, self.hw = sam, (size, size)
        h, w = resized_shape(sam, self.hw)
        # ResizeLongestSide.apply_boxes_torch with the working size fixed (it deep-copies, which export cannot trace)
        self.register_buffer("box_scale", torch.tensor([w / size, h / size] * 2), persistent=False)

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=boxes * self.box_scale, masks=None)
        low_res, _ = decode_batch(
            self.sam.mask_decoder, embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense
        )
        return logits_to_working(self.sam, low_res, self.hw)


def encoder_batch_is_free(sam: Sam) -> bool:
    """Whether ``encoder.onnx`` of ``sam`` takes any batch size (1 to 64); else one image per call (module doc)."""
    return not isinstance(sam, LiteMedSam)


def export_onnx(sam: Sam, size: int, out: Path) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` (module doc) of ``sam`` at working side ``size`` into ``out``;
    the batch size is free (1 to 64), but for an encoder that fixes it (:func:`encoder_batch_is_free`)."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as err:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'fetalgen[onnx]'") from err
    sam = sam.eval().float()
    batch = torch.export.Dim("batch", min=1, max=64)
    free = encoder_batch_is_free(sam)
    images = torch.rand(2 if free else 1, 1, size, size)
    encoder, decoder = OnnxEncoder(sam).eval(), OnnxBoxDecoder(sam, size).eval()
    with torch.no_grad():
        embeddings = encoder(images).expand(2, -1, -1, -1).contiguous()
    boxes = torch.tensor([[1.0, 1.0, size - 2.0, size - 2.0], [0.0, 0.0, size / 2, size / 2]])
    paths = out / "encoder.onnx", out / "decoder.onnx"
    torch.onnx.export(encoder, (images,), paths[0], dynamo=True, input_names=["images"],
                      output_names=["embeddings"], dynamic_shapes=({0: batch},) if free else None,
                      opset_version=OPSET, external_data=False, verbose=False)  # fmt: skip
    torch.onnx.export(decoder, (embeddings, boxes), paths[1], dynamo=True, input_names=["embeddings", "boxes"],
                      output_names=["logits"], dynamic_shapes=({0: batch}, {0: batch}), opset_version=OPSET,
                      external_data=False, verbose=False)  # fmt: skip
    return paths
