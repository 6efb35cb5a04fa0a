"""fetalgen-export: the fine-tuned SAM loads with segment-anything and gives fetalgen's masks; the generator loads
with diffusers and samples."""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from segment_anything import SamPredictor, sam_model_registry

from fetalgen.data.folder import read_folder
from fetalgen.data.io import load_image
from fetalgen.diffusion.checkpoint import load_generator
from fetalgen.diffusion.sampling import make_sampler, sample_pairs
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.export import MODEL_CARD
from fetalgen.segmentation.build import build_sam
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.tasks.export import export
from fetalgen.utils.checkpoints import CheckpointError


def finetune_checkpoint(
    module: SamFinetuneModule, path: Path, model_type: str, image_size: int, **model
) -> Path:
    """A checkpoint as fetalgen-finetune writes it (state dict, config, provenance, hyper-parameters)."""
    config = {
        "model": {
            "sam": {"model_type": model_type, "image_size": image_size},
            "trainable": "decoder",
            **model,
        },
        "data": {"image_size": image_size},
    }
    provenance = {"training_cases": [{"name": "000_HC", "cohort": "hc18"}], "generator_cases": None}
    torch.save({"state_dict": module.state_dict(), "fetalgen_config": config, "fetalgen_provenance": provenance,
                "hyper_parameters": dict(module.hparams), "global_step": 40}, path)  # fmt: skip
    return path


def trained(module: SamFinetuneModule) -> SamFinetuneModule:
    """Perturb the trainable weights, as training would."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return module


@pytest.mark.slow(minutes=2)
def test_exported_vit_b_loads_with_the_official_registry_and_gives_fetalgens_masks(
    compose_cfg, phantom_dir: Path, tmp_path: Path
):
    # A ViT-B at SAM's own 1024-px input (random weights, a trained decoder), the working size 1024 too, so
    # the official SamPredictor sees exactly the pixels fetalgen's predictor sees.
    torch.manual_seed(0)
    module = trained(SamFinetuneModule(sam_model_registry["vit_b"](), optimizer=partial(torch.optim.AdamW)))
    ckpt = finetune_checkpoint(module, tmp_path / "best.ckpt", "vit_b", 1024)
    result = export(compose_cfg("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'export'}"]))
    assert Path(result["model"]).name == "sam_vit_b.pth"
    card = Path(result["card"]).read_text()
    assert 'sam_model_registry["vit_b"]' in card and "hc18: 1 pair(s)" in card and "CC BY 4.0" in card

    official = sam_model_registry["vit_b"](checkpoint=result["model"]).eval()  # loads as is (strict)
    image = load_image(read_folder(phantom_dir)[0].image_path)
    square = np.zeros((1024, 1024), np.uint8)
    square[: image.shape[0] * 4, : image.shape[1] * 4] = np.kron(image, np.ones((4, 4), np.uint8))[
        :1024, :1024
    ]
    boxes = torch.tensor(
        [[100.0, 120.0, 700.0, 520.0], [50.0, 60.0, 900.0, 700.0], [300.0, 200.0, 600.0, 500.0]]
    )
    ours = SamBoxPredictor(module)(torch.from_numpy(square).float().div(255)[None, None], boxes[:, None])[
        :, 0
    ]
    predictor = SamPredictor(official)
    predictor.set_image(np.repeat(square[:, :, None], 3, axis=2))
    for box, mask in zip(boxes.numpy(), ours, strict=True):
        theirs, _, _ = predictor.predict(box=box, multimask_output=False)
        assert theirs[0].shape == mask.shape and (theirs[0] == mask).mean() > 0.999


def test_exported_lora_sam_gives_the_masks_of_the_fine_tuned_model(compose_cfg, tmp_path: Path):
    torch.manual_seed(0)
    module = SamFinetuneModule(build_sam("tiny", image_size=64, seed=0), optimizer=partial(torch.optim.AdamW),
                               trainable="lora", lora_rank=2, lora_alpha=4.0)  # fmt: skip
    trained(module)
    ckpt = finetune_checkpoint(module, tmp_path / "best.ckpt", "tiny", 64, trainable="lora")
    result = export(compose_cfg("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'export'}"]))
    state = torch.load(result["model"], weights_only=True)
    assert not any("lora" in k or "base_layer" in k for k in state)  # plain segment-anything keys
    plain = SamFinetuneModule(
        build_sam("tiny", checkpoint=result["model"], image_size=64), optimizer=torch.optim.AdamW
    )
    images, boxes = torch.rand(3, 1, 64, 64), torch.tensor([[[5.0, 6.0, 50.0, 40.0]] * 3])
    assert (SamBoxPredictor(plain)(images, boxes) == SamBoxPredictor(module)(images, boxes)).mean() > 0.999
    assert "build_sam(" in Path(result["card"]).read_text()  # tiny: not an official registry size


def test_exported_generator_loads_with_diffusers_and_samples(compose_cfg, tmp_path: Path):
    from fetalgen.tasks.train_diffusion import train_diffusion

    tiny = ["model=diffusion/tiny", "data.num_real=8", "data.num_val=4", "data.source.n=12", "data.source.shape=[68,100]",
            "data.batch_size=4", "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=none",
            "trainer.enable_progress_bar=false", "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.n=2",
            "callbacks.sample_grid.steps=2"]  # fmt: skip
    metrics = train_diffusion(compose_cfg("train_diffusion", tiny))
    result = export(
        compose_cfg("export", [f"ckpt_path={metrics['checkpoint']}", f"out={tmp_path / 'generator'}"])
    )
    folder = Path(result["model"])
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    reference, scheduler_config, _ = load_generator(metrics["checkpoint"])  # the EMA weights
    assert all(
        torch.equal(a, b)
        for a, b in zip(unet.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    assert scheduler.config.num_train_timesteps == scheduler_config["num_train_timesteps"]
    sampler, steps = make_sampler("ddim", scheduler.config, steps=3)
    pairs = sample_pairs(unet, sampler, seeds=[0, 1], steps=steps)
    assert pairs.shape == (2, 2, 32, 32) and torch.isfinite(pairs).all()
    assert (folder / MODEL_CARD).is_file() and "UNet2DModel.from_pretrained" in (
        folder / MODEL_CARD
    ).read_text()
    # A mask-conditioned generator: its parts and its shape prior, no DDPMPipeline (which would sample it without
    # its mask); the exported parts draw the same images for the same masks and seeds as the checkpoint.
    conditioned = train_diffusion(compose_cfg("train_diffusion", [*tiny, "generator=mask_conditioned"]))
    folder = Path(export(compose_cfg("export", [f"ckpt_path={conditioned['checkpoint']}",
                                                f"out={tmp_path / 'cond'}"]))["model"])  # fmt: skip
    assert (
        not (folder / "model_index.json").exists() and "shape_prior.json" in (folder / MODEL_CARD).read_text()
    )
    prior = ShapePrior.from_dict(json.loads((folder / "shape_prior.json").read_text()))
    masks = torch.from_numpy(np.stack([prior.mask(np.random.default_rng(i), 32) for i in range(2)])).float()[
        :, None
    ]
    exported = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    reference, scheduler_config, meta = load_generator(conditioned["checkpoint"])
    assert prior.to_dict() == meta["shape_prior"]
    drawn = [sample_pairs(unet, make_sampler("ddim", config, steps=3)[0], [0, 1], 3, masks=masks)
             for unet, config in ((exported, scheduler.config), (reference, scheduler_config))]  # fmt: skip
    assert torch.allclose(drawn[0], drawn[1], atol=1e-5) and torch.equal(drawn[0][:, 1:] > 0, masks > 0.5)


def test_a_file_that_is_no_fetalgen_checkpoint_is_refused(compose_cfg, tmp_path: Path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: not a fetalgen checkpoint"):
        export(compose_cfg("export", [f"ckpt_path={tmp_path / 'other.pth'}"]))


def test_an_export_into_a_non_empty_folder_is_refused(compose_cfg, tmp_path: Path):
    module = SamFinetuneModule(build_sam("tiny", image_size=64, seed=0), optimizer=partial(torch.optim.AdamW))
    ckpt = finetune_checkpoint(module, tmp_path / "best.ckpt", "tiny", 64)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sam_vit_b.pth").write_bytes(b"an earlier export")
    with pytest.raises(FileExistsError, match="out is not empty"):
        export(compose_cfg("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'out'}"]))
    assert (tmp_path / "out" / "sam_vit_b.pth").read_bytes() == b"an earlier export"


def test_the_model_card_reads_a_metrics_file_with_nulls(compose_cfg, tmp_path: Path):
    from fetalgen.utils.files import write_json

    module = SamFinetuneModule(build_sam("tiny", image_size=64, seed=0), optimizer=partial(torch.optim.AdamW))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ckpt = finetune_checkpoint(module, tmp_path / "run" / "checkpoints" / "best.ckpt", "tiny", 64)
    write_json(tmp_path / "run" / "metrics.json", {"val/dice": 0.5, "test/hc18/hd95_mm": float("nan")})
    result = export(compose_cfg("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'out'}"]))
    card = Path(result["card"]).read_text()
    assert "| val/dice | 0.5 |" in card and "hd95" not in card
