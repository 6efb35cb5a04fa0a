"""A ``fetalgen-export format=onnx`` folder run by onnxruntime, with the prompting of every box predictor.

The folder holds ``encoder.onnx``, ``decoder.onnx`` (:mod:`fetalgen.segmentation.onnx`) and ``predictor.json``:
the working side, the mask threshold, the automatic prompt's margin and whether the encoder takes a batch, written
by the export from the checkpoint's checked values. ``fetalgen-predict backend=onnxruntime onnx_dir=<folder>``
and :func:`load_onnx_segmenter` run it without PyTorch's model (masks equal to PyTorch's within the ONNX models'
1e-3, tests/segmentation/test_onnx.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fetalgen.segmentation.predictor import AUTO_ROUNDS, BoxPrompting, Embedded, SamBoxPredictor
from fetalgen.segmentation.segmenter import Segmenter
from fetalgen.utils.checkpoints import CheckpointError

SETTINGS = "predictor.json"
FILES = ("encoder.onnx", "decoder.onnx", SETTINGS)


def read_settings(folder: Path) -> dict[str, Any]:
    """The checked ``predictor.json`` of an export folder (every value typed and bounded, or refused naming it)."""
    path = folder / SETTINGS
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable predictor.json ({err}); re-export with fetalgen-export "
                              "format=onnx") from err  # fmt: skip
    checks = {"image_size": lambda v: isinstance(v, int) and 16 <= v <= 4096,
              "mask_threshold": lambda v: isinstance(v, (int, float)) and math.isfinite(v),
              "auto_margin_px": lambda v: isinstance(v, (int, float)) and 0 <= v <= 4096,
              "encoder_batch_free": lambda v: isinstance(v, bool)}  # fmt: skip
    bad = [key for key, ok in checks.items() if not (isinstance(raw, dict) and key in raw and ok(raw[key]))]
    if bad:
        raise CheckpointError(f"{path}: missing or out-of-range {', '.join(bad)}")
    return {key: raw[key] for key in checks}


def write_settings(folder: Path, predictor: SamBoxPredictor, size: int, encoder_batch_free: bool) -> Path:
    """Write ``predictor.json`` for the export of ``predictor``'s model at working side ``size``."""
    settings = {"image_size": int(size), "mask_threshold": float(predictor.threshold),
                "auto_margin_px": float(predictor.auto_margin(size)), "encoder_batch_free": bool(encoder_batch_free)}  # fmt: skip
    path = folder / SETTINGS
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


class OnnxBoxPredictor(BoxPrompting):
    """Box-prompted (and automatically prompted) masks from an ONNX export folder (module doc)."""

    def __init__(self, folder: str | Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("backend=onnxruntime needs onnxruntime: pip install 'fetalgen[onnx]'") from err
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: not a fetalgen ONNX export (no {', '.join(missing)})")
        self.settings = read_settings(folder)
        self.image_size = self.settings["image_size"]
        self.threshold = float(self.settings["mask_threshold"])
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options)
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options)
        self.encoded = 0

    def embed(self, images: torch.Tensor) -> Embedded:
        """Working images ``[B, 1, S, S]`` in [0, 1] -> embeddings (one image per call if the encoder fixes it)."""
        side = images.shape[-1]
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"working images of {side} px, but the export is for {self.image_size} px")
        array = images.float().cpu().numpy()
        step = len(array) if self.settings["encoder_batch_free"] else 1
        parts = [
            self.encoder.run(None, {"images": array[i : i + step]})[0] for i in range(0, len(array), step)
        ]
        self.encoded += len(array)
        return Embedded(torch.from_numpy(np.concatenate(parts)), (self.image_size, self.image_size))

    def logits(self, embedded: Embedded, boxes: torch.Tensor) -> np.ndarray:
        """Boxes ``[R, B, 4]`` -> logits ``[R, B, S, S]``, one decoder call over every box."""
        reps, batch = boxes.shape[:2]
        flat = boxes.reshape(reps * batch, 4).float().numpy()
        embeddings = embedded.embeddings.repeat(reps, 1, 1, 1).numpy()
        (logits,) = self.decoder.run(None, {"embeddings": embeddings, "boxes": flat})
        return logits[:, 0].reshape(reps, batch, *embedded.hw)

    def auto_margin(self, side: int) -> float:
        return float(self.settings["auto_margin_px"]) * side / self.image_size


def load_onnx_segmenter(folder: str | Path, auto_rounds: int = AUTO_ROUNDS) -> Segmenter:
    """A :class:`~fetalgen.segmentation.segmenter.Segmenter` that runs an ONNX export folder with onnxruntime."""
    predictor = OnnxBoxPredictor(folder)
    return Segmenter(predictor, predictor.image_size, auto_rounds)
