"""The logger group: csv and tensorboard (W&B has its own tests) record losses and the diffusion sample grids."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalgen.tasks.train_diffusion import train_diffusion

TINY = [
    "model=diffusion/tiny", "data.num_real=8", "data.num_val=4", "data.source.n=12", "data.source.shape=[68,100]",
    "data.batch_size=4", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.sample_grid.every_n_steps=2", "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2",
]  # fmt: skip


def test_csv_logger_records_the_losses(compose_cfg) -> None:
    cfg = compose_cfg("train_diffusion", [*TINY, "logger=csv"])
    train_diffusion(cfg)
    header = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "step"} <= set(header)


def test_tensorboard_logger_records_losses_and_sample_grids(compose_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg("train_diffusion", [*TINY, "logger=tensorboard"])
    train_diffusion(cfg)
    events = list((Path(cfg.paths.output_dir) / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert {"train/loss", "val/loss"} <= set(acc.Tags()["scalars"])
    assert any(tag.startswith("samples") for tag in acc.Tags()["images"]), acc.Tags()["images"]


@pytest.mark.parametrize("name", ["wandb", "csv", "tensorboard", "none"])
def test_every_logger_config_instantiates(compose_cfg, name: str) -> None:
    from fetalgen.tasks.common import instantiate_loggers

    cfg = compose_cfg("finetune", [f"logger={name}"])
    loggers = instantiate_loggers(cfg.get("logger"))
    assert len(loggers) == (0 if name == "none" else 1)
