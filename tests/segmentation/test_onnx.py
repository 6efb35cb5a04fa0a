"""fetalgen-export format=onnx: the encoder and the box decoder give, under onnxruntime, what PyTorch gives."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from fetalgen.export import export  # noqa: E402
from fetalgen.segmentation.predictor import SamBoxPredictor  # noqa: E402

SIZE = 48


def test_onnx_models_match_the_predictor_and_the_card_says_how_to_run_them(compose_cfg, tmp_path: Path):
    cfg = compose_cfg("finetune", ["model.sam.image_size=64", f"data.image_size={SIZE}", "logger=none"])
    module = instantiate(cfg.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as training would: the decoder's weights moved away from their init
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    ckpt = tmp_path / "best.ckpt"
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": module.state_dict(), "fetalgen_config": config, "global_step": 1}, ckpt)
    result = export(compose_cfg("export", [f"ckpt_path={ckpt}", "format=onnx", f"out={tmp_path / 'onnx'}"]))
    folder = Path(result["model"]).parent
    images = torch.rand(3, 1, SIZE, SIZE, generator=generator)
    boxes = torch.tensor(
        [[4.0, 6.0, 40.0, 30.0], [0.0, 0.0, SIZE - 1.0, SIZE - 1.0], [10.0, 12.0, 20.0, 44.0]]
    )
    predictor = SamBoxPredictor(module)
    embedded = predictor.embed(images)
    expected = predictor.logits(embedded, boxes[None])[0]
    (embeddings,) = ort.InferenceSession(str(folder / "encoder.onnx")).run(None, {"images": images.numpy()})
    assert np.abs(embeddings - embedded.embeddings.numpy()).max() < 1e-4
    (logits,) = ort.InferenceSession(str(folder / "decoder.onnx")).run(
        None, {"embeddings": embeddings, "boxes": boxes.numpy()}
    )
    assert logits.shape == (3, 1, SIZE, SIZE) and np.abs(logits[:, 0] - expected).max() < 1e-3
    assert ((logits[:, 0] > 0) == (expected > 0)).mean() > 0.999
    card = Path(result["card"]).read_text()
    assert "onnxruntime" in card and f"S = {SIZE}" in card and 'decoder.run(None, {"embeddings"' in card
    with pytest.raises(ValueError, match="format=tflite is not available"):
        export(compose_cfg("export", [f"ckpt_path={ckpt}", "format=tflite"]))
