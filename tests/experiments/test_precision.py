"""Mixed precision through Lightning's Trainer: bf16-mixed runs on the CPU here; 16-mixed and bf16 on a GPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fetalgen.tasks.finetune import finetune
from fetalgen.tasks.train_diffusion import train_diffusion

DIFFUSION = [
    "model=diffusion/tiny", "data.num_real=8", "data.num_val=4", "data.source.n=12", "data.source.shape=[68,100]",
    "data.batch_size=4", "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
    "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2",
    "logger=none",
]  # fmt: skip


def _sam(phantom_dir: Path) -> list[str]:
    return [
        "experiment=demo/finetune", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=1", "data=folder",
        f"data.source.root={phantom_dir}", "data.num_real=4", "data.num_val=4", "data.num_test=4",
        "eval.repetitions=1", "eval.figure=false",
    ]  # fmt: skip


def test_bf16_mixed_on_cpu(compose_cfg, phantom_dir: Path) -> None:
    metrics = train_diffusion(compose_cfg("train_diffusion", [*DIFFUSION, "trainer.precision=bf16-mixed"]))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    metrics = finetune(compose_cfg("finetune", [*_sam(phantom_dir), "trainer.precision=bf16-mixed"]))
    assert math.isfinite(metrics["val/loss"]) and 0.0 <= metrics["test/folder/dice"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_gpu(compose_cfg, phantom_dir: Path, precision: str) -> None:
    overrides = ["trainer=gpu", f"trainer.precision={precision}"]
    metrics = train_diffusion(compose_cfg("train_diffusion", [*DIFFUSION, *overrides]))
    assert math.isfinite(metrics["train/loss"])
    metrics = finetune(compose_cfg("finetune", [*_sam(phantom_dir), *overrides]))
    assert math.isfinite(metrics["val/loss"]) and 0.0 <= metrics["test/folder/dice"] <= 1.0


def test_fp16_on_a_cpu_is_refused_before_training(compose_cfg, phantom_dir: Path) -> None:
    with pytest.raises(ValueError, match="trainer.precision=16-mixed needs a GPU .*gradient scaler"):
        finetune(compose_cfg("finetune", [*_sam(phantom_dir), "trainer.precision=16-mixed"]))
    with pytest.raises(ValueError, match="trainer.precision=16-mixed needs a GPU"):
        train_diffusion(compose_cfg("train_diffusion", [*DIFFUSION, "trainer.precision=16-mixed"]))
    assert not list(Path(compose_cfg("train_diffusion", DIFFUSION).paths.output_dir).rglob("*.ckpt"))
