"""The fine-tuning LightningModule: training improves the loss (phantom and real HC18), prompts, freezing."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from fetalgen.data.datamodule import PairDataModule
from fetalgen.data.folder import read_folder
from fetalgen.segmentation.build import build_sam
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.segmentation.prompts import prompt_boxes


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def make_module(**kwargs) -> SamFinetuneModule:
    kwargs = {"optimizer": partial(torch.optim.AdamW, lr=3e-3), "cache": EmbeddingCache, "seed": 0} | kwargs
    return SamFinetuneModule(build_sam("tiny", image_size=64, seed=0), **kwargs)


def fit(module: SamFinetuneModule, datamodule: PairDataModule, epochs: int) -> tuple[list[float], pl.Trainer]:
    losses = StepLosses()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[losses],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return losses.losses, trainer


def assert_learns(losses: list[float], trainer: pl.Trainer) -> None:
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2]), losses
    assert {"train/loss", "val/loss", "val/dice", "val/iou"} <= set(trainer.callback_metrics)
    assert 0.0 <= float(trainer.callback_metrics["val/dice"]) <= 1.0


def test_training_on_phantom_pairs_lowers_the_loss(phantom_dir: Path):
    cases = read_folder(phantom_dir)
    data = PairDataModule(cases, image_size=64, num_real=8, num_val=4, num_test=3, batch_size=4, seed=0)
    module = make_module()
    decoder_before = [p.detach().clone() for p in module.sam.mask_decoder.parameters()]
    encoder_before = [p.detach().clone() for p in module.sam.image_encoder.parameters()]
    losses, trainer = fit(module, data, epochs=10)
    assert_learns(losses, trainer)
    assert len(losses) == 20
    changed = [
        not torch.equal(a, b)
        for a, b in zip(decoder_before, module.sam.mask_decoder.parameters(), strict=True)
    ]
    assert any(changed)
    assert all(
        torch.equal(a, b) for a, b in zip(encoder_before, module.sam.image_encoder.parameters(), strict=True)
    )
    assert module.cache.misses == 8 + 4  # train and val images, each encoded once over 10 epochs
    batch = next(iter(data.test_dataloader()))
    predicted = SamBoxPredictor(module)(batch["image"], module.eval_boxes(batch["mask"], batch["name"])[None])
    assert predicted.shape == (1, 3, 64, 64) and predicted.dtype == bool


@pytest.mark.hc18
def test_training_on_real_hc18_pairs_lowers_the_loss(hc18_dir: Path):
    from fetalgen.data.hc18 import read_hc18

    data = PairDataModule(read_hc18(hc18_dir), image_size=64, num_real=8, num_val=4, batch_size=4, seed=0)
    losses, trainer = fit(make_module(), data, epochs=10)
    assert_learns(losses, trainer)


def test_validation_prompts_are_fixed_per_image_and_training_prompts_vary():
    module = make_module()
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 20:40, 16:44] = 1
    names = ["a", "b"]
    first = module.eval_boxes(masks, names)
    again = module.eval_boxes(masks, names)
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])  # per image, same every epoch
    for box, name in zip(first, names, strict=True):  # one rule: the first box evaluation gives the image
        evaluated = prompt_boxes(masks[0, 0].numpy() > 0.5, name, "jitter", 5, seed=0, max_jitter_px=20)
        assert np.array_equal(box.numpy(), evaluated[0])
    tight = torch.tensor([16.0, 20.0, 43.0, 39.0])
    assert torch.all(first[:, :2] <= tight[:2]) and torch.all(first[:, 2:] >= tight[2:])
    assert torch.equal(module.boxes(masks, "tight", [None, None])[0], tight)
    rng = np.random.default_rng(0)
    a = module.boxes(masks, "jitter", [rng] * 2)
    b = module.boxes(masks, "jitter", [rng] * 2)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown prompt mode"):
        make_module(train_prompt="points")


def test_frozen_parts_stay_in_eval_mode_and_only_trainable_params_are_optimised():
    module = make_module(trainable="decoder_prompt")
    module.train()
    assert module.sam.mask_decoder.training and module.sam.prompt_encoder.training
    assert not module.sam.image_encoder.training
    optimizer = module.configure_optimizers()
    n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in module.parameters() if p.requires_grad)
    n_parts = sum(
        p.numel() for m in (module.sam.mask_decoder, module.sam.prompt_encoder) for p in m.parameters()
    )
    assert 0 < n_opt < n_parts  # the parts minus what box prompts never reach (build.set_trainable)
    scheduled = make_module(lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    config = scheduled.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_module_forward_returns_low_resolution_logits_for_one_box_per_image():
    module = make_module()
    masks = torch.zeros(3, 1, 64, 64)
    masks[:, :, 10:50, 12:40] = 1
    boxes = module.eval_boxes(masks, ["x", "y", "z"])
    with torch.no_grad():
        logits = module(torch.rand(3, 1, 64, 64), boxes)
    assert boxes.shape == (3, 4) and logits.shape == (
        3,
        1,
        16,
        16,
    )  # 64 px encoder input: masks at 64 / 4 and torch.isfinite(logits).all()


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_share_of_training_prompts_poses_the_whole_image_box(phantom_dir: Path, share: float):
    data = PairDataModule(
        read_folder(phantom_dir), image_size=64, num_real=16, num_val=4, batch_size=16, seed=0
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    boxes = {}
    for key, value in (("mixed", share), ("paper", 0.0)):
        module = make_module(full_box_share=value)
        seen = []
        forward = module.forward
        module.forward = lambda images, b, forward=forward, seen=seen: (
            seen.append(b.clone()) or forward(images, b)
        )
        module.training_step(batch, 0)
        boxes[key] = seen[0]
    whole = (boxes["mixed"] == torch.tensor([0.0, 0.0, 63.0, 63.0])).all(dim=1)
    assert int(whole.sum()) == {0.0: 0, 0.5: int(whole.sum()), 1.0: 16}[share] and (
        share != 0.5 or 3 <= whole.sum() <= 13
    )
    # the others are the boxes the paper's training draws, unchanged by the mix
    assert torch.equal(boxes["mixed"][~whole], boxes["paper"][~whole])
    with pytest.raises(ValueError, match="full_box_share"):
        make_module(full_box_share=1.5)
