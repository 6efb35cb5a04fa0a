"""Samplers, the denoising loop, per-index determinism, guidance and the mask-conditioned mode (tiny UNet)."""

from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fetalgen.cli import CONFIG_DIR
from fetalgen.diffusion.channels import to_signed
from fetalgen.diffusion.postprocess import clean_mask
from fetalgen.diffusion.sampling import (
    class_label_tensor,
    guided_output,
    head_mask,
    head_mask_for_hc,
    make_sampler,
    masks_to_tensor,
    sample_pairs,
)
from fetalgen.metrics.biometry import fit_ellipse, measure_head
from fetalgen.utils.seeds import derive_seed


def tiny_parts(overrides=()):
    """(unet, noise_scheduler) of the tiny preset, randomly initialised with a fixed seed."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_diffusion", overrides=["model=diffusion/tiny", *overrides])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    unet = hydra.utils.instantiate(cfg.model.unet).eval()
    return unet, hydra.utils.instantiate(cfg.model.noise_scheduler)


@pytest.fixture(scope="module")
def tiny():
    return tiny_parts()


@pytest.fixture(scope="module")
def tiny_conditional():
    return tiny_parts(["model.unet.num_class_embeds=4"])


def test_make_sampler_builds_each_scheduler_from_the_training_config(tiny):
    _, train = tiny
    expected = {
        "ddpm": (DDPMScheduler, 1000),
        "ddim": (DDIMScheduler, 50),
        "dpmsolver++": (DPMSolverMultistepScheduler, 20),
        "sde-dpmsolver++": (DPMSolverMultistepScheduler, 20),
        "unipc": (UniPCMultistepScheduler, 10),
    }
    for name, (cls, steps) in expected.items():
        scheduler, n = make_sampler(name, train.config)
        assert isinstance(scheduler, cls) and n == steps
        assert scheduler.config.beta_schedule == train.config.beta_schedule
        assert scheduler.config.prediction_type == train.config.prediction_type
    dpm, n = make_sampler("dpmsolver++", train.config, steps=25)
    assert dpm.config.algorithm_type == "dpmsolver++" and n == 25
    sde, _ = make_sampler("sde-dpmsolver++", train.config)
    assert sde.config.algorithm_type == "sde-dpmsolver++"


def test_make_sampler_rejects_unknown_names_and_step_counts(tiny):
    _, train = tiny
    with pytest.raises(ValueError, match="Unknown sampler"):
        make_sampler("euler", train.config)
    with pytest.raises(ValueError, match="steps"):
        make_sampler("ddim", train.config, steps=0)
    with pytest.raises(ValueError, match="steps"):
        make_sampler("ddim", train.config, steps=1001)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "sde-dpmsolver++", "ddpm", "unipc"])
def test_sample_i_is_the_same_alone_or_in_a_batch(tiny, sampler):
    unet, train = tiny
    scheduler, _ = make_sampler(sampler, train.config)
    seeds = [derive_seed(7, i) for i in range(4)]
    batch = sample_pairs(unet, scheduler, seeds, steps=8)
    for i in (0, 3):
        alone = sample_pairs(unet, scheduler, [seeds[i]], steps=8)
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-3, rtol=0)  # float rounding only
    other = sample_pairs(unet, scheduler, [derive_seed(8, 0)], steps=8)
    assert (other - batch[:1]).abs().max() > 0.1


def test_every_sampler_runs_with_its_default_steps(tiny):
    unet, train = tiny
    for name in ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc"):
        scheduler, steps = make_sampler(name, train.config)
        x = sample_pairs(unet, scheduler, [1, 2], steps, image_size=8)  # 8 px keeps DDPM-1000 fast
        assert x.shape == (2, 2, 8, 8)
        assert torch.isfinite(x).all()


def test_mask_conditioned_output_keeps_the_given_mask_exactly(tiny):
    unet, train = tiny
    masks = masks_to_tensor([head_mask(32, 0.3), head_mask(32, 0.2, 0.7, (0.4, 0.6), 30.0)])
    for name in ("ddim", "dpmsolver++", "sde-dpmsolver++"):
        scheduler, _ = make_sampler(name, train.config)
        x = sample_pairs(unet, scheduler, [3, 4], steps=6, masks=masks)
        assert torch.equal(x[:, 1:], to_signed(masks))
        for j in range(2):
            assert np.array_equal(clean_mask(x[j, 1].numpy()), masks[j, 0].numpy() > 0)
    # The image does depend on the mask it was generated for.
    scheduler, _ = make_sampler("ddim", train.config)
    flipped = sample_pairs(unet, scheduler, [3, 4], steps=6, masks=masks.flip(0))
    assert (flipped[:, :1] - x[:, :1]).abs().max() > 1e-3


def test_mask_conditioned_rejects_wrong_mask_shape(tiny):
    unet, train = tiny
    scheduler, _ = make_sampler("ddim", train.config)
    with pytest.raises(ValueError, match="masks"):
        sample_pairs(unet, scheduler, [1, 2], steps=2, masks=torch.zeros(1, 1, 32, 32))


def test_class_labels_map_none_to_the_null_class(tiny, tiny_conditional):
    unet, _ = tiny_conditional
    labels = class_label_tensor(unet, [0, None, 2], 3, torch.device("cpu"))
    assert labels.tolist() == [0, 3, 2]
    assert class_label_tensor(unet, None, 2, torch.device("cpu")).tolist() == [3, 3]
    with pytest.raises(ValueError, match="out of range"):
        class_label_tensor(unet, [3], 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="no class embedding"):
        class_label_tensor(tiny[0], [1], 1, torch.device("cpu"))
    assert class_label_tensor(tiny[0], None, 2, torch.device("cpu")) is None


def test_classifier_free_guidance_combines_conditional_and_null_outputs(tiny_conditional):
    unet, train = tiny_conditional
    with torch.no_grad():
        unet.class_embedding.weight.normal_()  # make the classes matter for the check
        x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([500, 500])  # per-sample timesteps; a scalar works too (below)
        labels = torch.tensor([0, 2])
        cond = unet(x, t, class_labels=labels).sample
        uncond = unet(x, t, class_labels=torch.tensor([3, 3])).sample
        guided = guided_output(unet, x, t, labels, 3.0)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided_output(unet, x, t, labels, 1.0), cond)
    torch.testing.assert_close(guided_output(unet, x, torch.tensor(500), labels, 3.0), guided)
    scheduler, _ = make_sampler("ddim", train.config)
    a = sample_pairs(unet, scheduler, [1, 2], 4, class_labels=[0, 2], guidance_scale=2.0)
    b = sample_pairs(unet, scheduler, [1, 2], 4, class_labels=[1, 2], guidance_scale=2.0)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], b[0])


def test_head_mask_for_hc_measures_back_to_the_asked_circumference():
    for hc_mm, pixel_mm, ratio in [(180.0, 1.0, 0.8), (250.0, 1.2, 0.75), (120.0, 2.0, 0.85)]:
        mask = head_mask_for_hc(128, hc_mm, pixel_size_mm=pixel_mm, axis_ratio=ratio, angle_deg=20.0)
        measured = measure_head(mask, pixel_size_mm=pixel_mm).hc
        assert abs(measured - hc_mm) / hc_mm < 0.01


def test_head_mask_geometry():
    mask = head_mask(64, 0.25, axis_ratio=0.5, center=(0.5, 0.5), angle_deg=0.0)
    e = fit_ellipse(mask)
    assert abs(e.cx - 31.5) < 0.5 and abs(e.cy - 31.5) < 0.5
    assert abs(e.semi_major - 16) < 1 and abs(e.semi_minor - 8) < 1
    assert e.angle_deg < 5 or e.angle_deg > 175
    with pytest.raises(ValueError):
        head_mask(64, 0.25, axis_ratio=1.5)


class OracleDenoiser(torch.nn.Module):
    """The exact denoiser of a data set holding one pair ``target`` [1,2,S,S] (UNet2DModel's interface).

    ``eps(x_t, t) = (x_t - sqrt(abar_t) target) / sqrt(1 - abar_t)``; ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) target``.
    Every correct sampler must then return ``target``.
    """

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str) -> None:
        super().__init__()
        self.register_buffer("target", target)
        self.register_buffer("abar", alphas_cumprod)
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the sampler a parameter dtype
        self.prediction_type = prediction_type
        self.config = SimpleNamespace(sample_size=target.shape[-1], in_channels=2, num_class_embeds=None)

    @property
    def device(self) -> torch.device:
        return self.target.device

    def forward(self, x, t, class_labels=None):
        a = self.abar[t.long()].reshape(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.target) / (1 - a).sqrt()
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * self.target
        return SimpleNamespace(sample=out * self.scale)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    "sampler,steps",
    [
        ("ddpm", 1000),
        ("ddpm", 50),
        ("ddpm", 10),
        ("ddim", 50),
        ("ddim", 10),
        ("dpmsolver++", 20),
        ("dpmsolver++", 10),
        ("sde-dpmsolver++", 20),
        ("sde-dpmsolver++", 10),
        ("unipc", 10),
    ],
)
def test_samplers_recover_the_only_training_pair_with_an_exact_denoiser(prediction_type, sampler, steps):
    train = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type
    )
    image = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8)
    mask = torch.from_numpy(head_mask(8, 0.3)).float()[None, None]
    target = torch.cat([image, mask * 2 - 1], dim=1)
    oracle = OracleDenoiser(target, train.alphas_cumprod, prediction_type)
    scheduler, steps = make_sampler(sampler, train.config, steps)
    joint = sample_pairs(oracle, scheduler, [1, 2], steps)
    torch.testing.assert_close(joint, target.expand(2, -1, -1, -1), atol=2e-2, rtol=0)
    conditioned = sample_pairs(oracle, scheduler, [3], steps, masks=mask)
    torch.testing.assert_close(conditioned, target, atol=2e-2, rtol=0)
