"""fetalgen: few real fetal-head ultrasound pairs -> many synthetic pairs -> a better SAM.

From Python: ``from fetalgen import load_segmenter`` (:mod:`fetalgen.segmentation.segmenter`).

Packages:
    data          readers (HC18, generic folders, synthetic sets, phantoms, DICOM), splits, augmentation
    diffusion     the joint two-channel (image, mask) diffusion model, sampling, post-processing
    segmentation  SAM building, prompts, embedding cache, fine-tuning module, the segmenter
    metrics       overlap, surface distances, biometry, synthetic-data QC
    baselines     trivial references every SAM result is shown beside
    cli           thin Hydra entry points
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_onnx_segmenter", "load_segmenter"]


def __getattr__(name: str) -> Any:
    # Lazy: `import fetalgen` (every command's start, `--help`) does not import torch.
    if name == "load_segmenter":
        from fetalgen.segmentation.segmenter import load_segmenter

        return load_segmenter
    if name == "load_onnx_segmenter":
        from fetalgen.segmentation.onnx_predictor import load_onnx_segmenter

        return load_onnx_segmenter
    raise AttributeError(f"module 'fetalgen' has no attribute {name!r}")
