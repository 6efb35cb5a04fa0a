"""JointDiffusionModule: loss targets, label handling, EMA, overfitting a batch, checkpoint resume and loading."""

from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from fetalgen.data.cases import DataError
from fetalgen.data.dataset import PairDataset
from fetalgen.data.phantom import phantom_cases
from fetalgen.diffusion.checkpoint import load_generator
from fetalgen.diffusion.module import JointDiffusionModule
from fetalgen.tasks.train_diffusion import train_diffusion
from fetalgen.utils.checkpoints import CheckpointError

TINY_DATA = [
    "data.num_real=8",
    "data.num_val=4",
    "data.source.n=12",
    "data.source.shape=[68,100]",
    "data.batch_size=4",
]
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


def build(compose_cfg, overrides=()) -> JointDiffusionModule:
    cfg = compose_cfg("train_diffusion", ["model=diffusion/tiny", *overrides])
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model)


@pytest.fixture(scope="module")
def fixed_batch(tmp_path_factory) -> dict:
    """Four phantom pairs at 32 px as one batch."""
    cases = phantom_cases(tmp_path_factory.mktemp("phantom32"), n=4, seed=0, shape=(68, 100))
    return next(iter(DataLoader(PairDataset(cases, 32), batch_size=4)))


def test_tiny_preset_builds_a_two_channel_unet(compose_cfg):
    model = build(compose_cfg)
    assert model.unet.config.in_channels == model.unet.config.out_channels == 2
    assert model.image_size == model.unet.config.sample_size == 32
    assert model.num_classes == 0 and model.ema is not None


def test_unknown_prediction_type_raises(compose_cfg):
    model = build(compose_cfg)
    with pytest.raises(ValueError, match="prediction_type 'foo'"):
        JointDiffusionModule(model.unet, DDPMScheduler(prediction_type="foo"), torch.optim.AdamW)
    model.noise_scheduler.register_to_config(prediction_type="foo")  # changed after construction
    with pytest.raises(ValueError, match="prediction_type 'foo'"):
        model.loss_target(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.tensor([1]))
    with pytest.raises(Exception, match="prediction_type 'foo'"):  # through Hydra (wrapped in its exception)
        build(compose_cfg, ["model.noise_scheduler.prediction_type=foo"])


def test_v_prediction_target_is_the_velocity(compose_cfg, fixed_batch):
    model = build(
        compose_cfg,
        [
            "model.noise_scheduler.prediction_type=v_prediction",
            "model.noise_scheduler.beta_schedule=squaredcos_cap_v2",
        ],
    )
    x0 = torch.full((1, 2, 2, 2), 0.5)
    noise = torch.full((1, 2, 2, 2), -1.0)
    t = torch.tensor([400])
    abar = model.noise_scheduler.alphas_cumprod[400]
    expected = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(model.loss_target(x0, noise, t), expected)
    loss = model.diffusion_loss(fixed_batch, drop_labels=True)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.unet.conv_in.weight.grad is not None


def test_epsilon_target_is_the_noise(compose_cfg):
    model = build(compose_cfg, ["model.noise_scheduler.prediction_type=epsilon"])
    noise = torch.randn(2, 2, 4, 4)
    assert model.loss_target(torch.zeros(2, 2, 4, 4), noise, torch.tensor([1, 2])) is noise


def test_validation_loss_uses_fixed_noise(compose_cfg, fixed_batch):
    model = build(compose_cfg)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = model.diffusion_loss(fixed_batch, drop_labels=False, generator=g())
    b = model.diffusion_loss(fixed_batch, drop_labels=False, generator=g())
    c = model.diffusion_loss(fixed_batch, drop_labels=False, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c


def test_class_labels_unknown_and_dropped_go_to_the_null_class(compose_cfg):
    model = build(compose_cfg, ["model.unet.num_class_embeds=4"])
    assert model.num_classes == 3
    batch = {"trimester": torch.tensor([0, 2, -1, 1])}
    assert model.class_labels(batch, drop=False).tolist() == [0, 2, 3, 1]
    model.p_uncond = 1.0
    assert model.class_labels(batch, drop=True).tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="num_classes"):
        model.class_labels({"trimester": torch.tensor([3])}, drop=False)
    with pytest.raises(KeyError, match="trimester"):
        model.class_labels({}, drop=False)
    assert build(compose_cfg).class_labels(batch, drop=False) is None


def test_ema_weights_are_swapped_in_and_restored(compose_cfg):
    model = build(compose_cfg)
    raw = [p.detach().clone() for p in model.unet.parameters()]
    with torch.no_grad():
        for s in model.ema.shadow_params:
            s.add_(1.0)
    with model.ema_weights() as unet:
        assert not unet.training
        for p, s in zip(unet.parameters(), model.ema.shadow_params, strict=True):
            assert torch.equal(p, s)
    assert model.unet.training
    for p, r in zip(model.unet.parameters(), raw, strict=True):
        assert torch.equal(p, r)


def test_short_training_overfits_a_fixed_batch(compose_cfg, fixed_batch):
    model = build(compose_cfg, ["model.lr_scheduler.num_warmup_steps=5", "model.optimizer.lr=3e-3"])
    model.train()

    def fixed_loss() -> float:
        losses = [
            model.diffusion_loss(fixed_batch, False, torch.Generator().manual_seed(s)) for s in range(4)
        ]
        return float(torch.stack(losses).mean())

    with torch.no_grad():
        before = fixed_loss()
    trainer = pl.Trainer(
        max_steps=80,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader([fixed_batch], batch_size=None))
    with torch.no_grad():
        after = fixed_loss()
    assert trainer.global_step == 80 and model.ema.optimization_step == 80
    print(f"fixed-noise loss {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, (before, after)


def test_resume_continues_global_step_and_ema(compose_cfg, tmp_path):
    overrides = [
        "model=diffusion/tiny",
        *TINY_DATA,
        *QUIET,
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "callbacks.sample_grid.every_n_steps=0",
        "trainer.val_check_interval=3",
    ]
    first = train_diffusion(compose_cfg("train_diffusion", [*overrides, "trainer.max_steps=3"]))
    last = Path(first["checkpoint"])
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 3 and saved["ema"]["optimization_step"] == 3

    class RecordEMA(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = pl_module.ema.optimization_step
            self.shadow = [s.clone() for s in pl_module.ema.shadow_params]

    record = RecordEMA()
    cfg = compose_cfg("train_diffusion", [*overrides, "trainer.max_steps=6", f"ckpt_path={last}"])
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[record], logger=False, enable_checkpointing=False
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=last)
    assert record.step == 3
    for got, want in zip(record.shadow, saved["ema"]["shadow_params"], strict=True):
        assert torch.equal(got, want)
    assert trainer.global_step == 6 and model.ema.optimization_step == 6

    second = train_diffusion(
        compose_cfg("train_diffusion", [*overrides, "trainer.max_steps=6", f"ckpt_path={last}"])
    )
    assert second["global_step"] == 6
    resumed = torch.load(second["checkpoint"], weights_only=True)
    assert resumed["global_step"] == 6 and resumed["ema"]["optimization_step"] == 6


def test_load_generator_rebuilds_the_ema_model_from_the_file_alone(compose_cfg):
    overrides = [
        "model=diffusion/tiny",
        *TINY_DATA,
        *QUIET,
        "trainer.max_steps=2",
        "callbacks.sample_grid.every_n_steps=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "model.unet.num_class_embeds=4",
    ]
    metrics = train_diffusion(compose_cfg("train_diffusion", overrides))
    path = Path(metrics["checkpoint"])
    ckpt = torch.load(path, weights_only=True)
    unet, scheduler_config, meta = load_generator(path)
    for p, s in zip(unet.parameters(), ckpt["ema"]["shadow_params"], strict=True):
        assert torch.equal(p, s)
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    assert unet.config.num_class_embeds == 4 and meta["num_classes"] == 3
    assert (
        scheduler_config["num_train_timesteps"] == 1000
        and scheduler_config["prediction_type"] == "v_prediction"
    )
    assert meta["global_step"] == 2 and meta["ema"] and meta["image_size"] == 32 and len(meta["sha256"]) == 64
    assert meta["config"]["model"]["unet"]["_target_"] == "diffusers.UNet2DModel"
    assert meta["config"]["data"]["num_real"] == 8
    # One run record for both training tasks: the resolved config and the provenance under the same keys as SAM's.
    assert ckpt["fetalgen_config"] == meta["config"] and "config" not in ckpt.get("hyper_parameters", {})
    assert ckpt["fetalgen_task"] == "diffusion"
    assert len(ckpt["fetalgen_provenance"]["training_cases"]) == 8 == len(meta["training_cases"])
    raw, _, raw_meta = load_generator(path, use_ema=False)
    assert not raw_meta["ema"]
    state = {k.removeprefix("unet."): v for k, v in ckpt["state_dict"].items()}
    for name, p in raw.named_parameters():
        assert torch.equal(p, state[name])
    state_ema = list(ckpt["ema"]["shadow_params"])
    ckpt["ema"]["shadow_params"] = state_ema[:-1]  # EMA of another UNet: refused, not zipped
    torch.save(ckpt, path.with_name("short_ema.ckpt"))
    with pytest.raises(DataError, match="EMA holds"):
        load_generator(path.with_name("short_ema.ckpt"))
    ckpt["ema"]["shadow_params"] = [
        p[..., :1] if p.ndim else p for p in state_ema
    ]  # right count, wrong shapes
    torch.save(ckpt, path.with_name("narrow_ema.ckpt"))
    with pytest.raises(DataError, match=r"narrow_ema.ckpt: \d+ EMA tensors do not fit the UNet: .* vs UNet"):
        load_generator(path.with_name("narrow_ema.ckpt"))
    ckpt["fetalgen"]["unet_config"] = {
        **ckpt["fetalgen"]["unet_config"],
        "block_out_channels": [200000, 200000],
    }
    torch.save(ckpt, path.with_name("huge.ckpt"))  # would allocate hundreds of GB before any weight is read
    with pytest.raises(
        DataError, match=r"huge.ckpt: the stored UNet config is out of bounds: block_out_channels"
    ):
        load_generator(path.with_name("huge.ckpt"))


def test_load_generator_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_generator(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt: cannot be read"):
        load_generator(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.ckpt: not a fetalgen checkpoint"):
        load_generator(other)
    sam = tmp_path / "sam.ckpt"
    torch.save({"state_dict": {"sam.x": torch.zeros(1)}, "fetalgen_task": "finetune"}, sam)
    with pytest.raises(
        CheckpointError, match="a fetalgen-finetune checkpoint, but this needs a fetalgen-train-"
    ):
        load_generator(sam)


def test_class_embedding_needs_room_for_the_null_class(compose_cfg):
    with pytest.raises(Exception, match="num_class_embeds"):  # ValueError, wrapped by Hydra
        build(compose_cfg, ["model.unet.num_class_embeds=1"])


@pytest.mark.parametrize(("preset", "size", "multiple"), [("tiny", 33, 2), ("small", 36, 8)])
def test_an_image_size_the_unet_cannot_take_is_refused_at_once(compose_cfg, preset, size, multiple):
    with pytest.raises(Exception, match=f"image_size={size} does not fit this UNet.*multiple of {multiple}"):
        build(compose_cfg, [f"model=diffusion/{preset}", f"model.image_size={size}"])


def test_the_mask_loss_weight_weighs_the_mask_channel(compose_cfg, fixed_batch):
    from fetalgen.diffusion.channels import pack

    model = build(compose_cfg, ["model.mask_loss_weight=3.0"])
    x0 = pack(fixed_batch["image"], fixed_batch["mask"])
    noise, t = model.draw_noise(
        x0, torch.Generator().manual_seed(3)
    )  # the draw the loss makes with that seed
    with torch.no_grad():
        pred = model.unet(model.noise_scheduler.add_noise(x0, noise, t), t).sample
        image_err, mask_err = (pred - model.loss_target(x0, noise, t)).pow(2).mean(dim=(0, 2, 3))
        loss = model.diffusion_loss(fixed_batch, False, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, (image_err + 3 * mask_err) / 4)
    assert not torch.isclose(loss, (image_err + mask_err) / 2)  # the weight changed it
    with pytest.raises(Exception, match="mask_loss_weight must be >= 0"):
        build(compose_cfg, ["model.mask_loss_weight=-1"])
