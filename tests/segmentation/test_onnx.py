"""fetalgen-export format=onnx: the encoder and the box decoder give, under onnxruntime, what PyTorch gives."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from fetalgen import load_onnx_segmenter  # noqa: E402
from fetalgen.segmentation.module import SamFinetuneModule  # noqa: E402
from fetalgen.segmentation.predictor import SamBoxPredictor  # noqa: E402
from fetalgen.tasks.export import export  # noqa: E402
from fetalgen.tasks.predict import predict  # noqa: E402

SIZE = 48


def tuned_checkpoint(compose_cfg, tmp_path: Path) -> tuple[Path, SamFinetuneModule]:
    """A tiny SAM's checkpoint, its decoder's weights moved away from their init (as training would)."""
    cfg = compose_cfg("finetune", ["model.sam.image_size=64", f"data.image_size={SIZE}", "logger=none"])
    module = instantiate(cfg.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    ckpt = tmp_path / "best.ckpt"
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": module.state_dict(), "fetalgen_config": config, "global_step": 1}, ckpt)
    return ckpt, module


def test_onnx_models_match_the_predictor_and_the_card_says_how_to_run_them(compose_cfg, tmp_path: Path):
    ckpt, module = tuned_checkpoint(compose_cfg, tmp_path)
    generator = torch.Generator().manual_seed(1)
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


def test_predict_runs_an_onnx_export_as_it_runs_the_checkpoint(
    compose_cfg, tmp_path: Path, phantom_dir: Path
):
    ckpt, _ = tuned_checkpoint(compose_cfg, tmp_path)
    folder = tmp_path / "onnx"
    export(compose_cfg("export", [f"ckpt_path={ckpt}", "format=onnx", f"out={folder}"]))
    assert json.loads((folder / "predictor.json").read_text())["image_size"] == SIZE
    images = tmp_path / "unlabelled" / "images"
    images.mkdir(parents=True)
    for image in sorted((phantom_dir / "images").iterdir())[:4]:
        shutil.copy(image, images / image.name)
    shutil.copy(phantom_dir / "pixel_sizes.csv", images.parent / "pixel_sizes.csv")
    common = [f"images.root={images.parent}", "progress=false"]
    torch_run = predict(compose_cfg("predict", [f"ckpt_path={ckpt}", f"out={tmp_path / 'pt'}", *common]))
    onnx_run = predict(compose_cfg("predict", ["backend=onnxruntime", f"onnx_dir={folder}",
                                               f"out={tmp_path / 'ort'}", *common]))  # fmt: skip
    assert onnx_run["backend"] == "onnxruntime" and onnx_run["n_images"] == torch_run["n_images"] == 4
    for mask in sorted((tmp_path / "pt" / "masks").iterdir()):  # the automatic prompt, both rounds, on both
        ours = cv2.imread(str(tmp_path / "ort" / "masks" / mask.name), cv2.IMREAD_GRAYSCALE)
        assert (ours == cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)).mean() > 0.999
    settings = json.loads((tmp_path / "ort" / "predict_settings.json").read_text())
    assert settings["onnx_encoder_sha256"] and settings["onnx_settings_sha256"]
    with pytest.raises(ValueError, match="needs onnx_dir"):
        predict(compose_cfg("predict", ["backend=onnxruntime", *common]))
    (folder / "predictor.json").write_text(json.dumps({"image_size": 10**9}))
    with pytest.raises(
        ValueError, match="predictor.json: missing or out-of-range image_size, mask_threshold"
    ):
        load_onnx_segmenter(folder)
