"""The mask-conditioned image generator: trains, samples images for given masks, and its images show the heads the
masks say (agreement on a toy set far above the shuffled-mask floor)."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.diffusion.module import MaskConditionedDiffusionModule
from fetalgen.diffusion.sampling import is_mask_conditioned
from fetalgen.metrics.agreement import calibrated_agreement
from fetalgen.synthesis.reference import ReferenceSegmenter


def test_the_generator_config_builds_the_conditioned_module(compose_cfg):
    cfg = compose_cfg("train_diffusion", ["generator=mask_conditioned", "model=diffusion/tiny"])
    module = instantiate(cfg.model)
    assert isinstance(module, MaskConditionedDiffusionModule) and is_mask_conditioned(module.unet)
    joint_unet = instantiate(compose_cfg("train_diffusion", ["model=diffusion/tiny"]).model.unet)
    with pytest.raises(ValueError, match="out_channels=1"):
        MaskConditionedDiffusionModule(
            joint_unet, noise_scheduler=module.noise_scheduler, optimizer=torch.optim.AdamW
        )
    with pytest.raises(ValueError, match="needs the masks"):
        module.sample(2, steps=2)


def toy_pairs(folder, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Phantom head masks with toy images: the head brighter than the background, with noise (what a generator
    that follows its mask must draw)."""
    masks = torch.from_numpy(np.stack([m > 0 for m in PairDataset(read_folder(folder), 32).masks])).float()[
        :, None
    ]
    noise = torch.randn(masks.shape, generator=torch.Generator().manual_seed(seed)) * 0.08
    return (0.25 + 0.45 * masks + noise).clamp(0, 1), masks


@pytest.mark.slow(minutes=2)
def test_images_drawn_for_given_masks_show_those_heads(compose_cfg, other_phantoms, phantom_dir):
    torch.manual_seed(0)
    cfg = compose_cfg(
        "train_diffusion", ["generator=mask_conditioned", "model=diffusion/tiny", "model.ema=null"]
    )
    module = instantiate(cfg.model)
    images, masks = toy_pairs(phantom_dir, 0)
    optimizer = torch.optim.AdamW(module.unet.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(600):
        pick = torch.randint(len(images), (16,), generator=generator)
        loss = module.diffusion_loss({"image": images[pick], "mask": masks[pick]}, drop_labels=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # v-prediction (the default): its loss starts lower than epsilon's, so it falls by less than half
    assert np.mean(losses[-50:]) < 0.7 * np.mean(losses[:50])
    # Images for masks it never saw (another phantom set), judged by a segmenter trained on real (toy) pairs.
    real, given = toy_pairs(other_phantoms, 1)
    module.eval()
    pairs = module.sample(len(given), seed=1, sampler="ddim", steps=20, masks=given, guidance_scale=2.0)
    assert torch.equal(pairs[:, 1:] > 0, given > 0.5)  # the mask channel is the given mask
    segmenter = ReferenceSegmenter(32, seed=0)
    segmenter.fit(images, masks, steps=150)
    bool_masks = given[:, 0].numpy() > 0.5
    agreement = calibrated_agreement(
        segmenter.predict, (pairs[:, :1] + 1) / 2, bool_masks, real, bool_masks, seed=0
    )
    floor, ceiling = agreement["floor"], agreement["ceiling"]
    assert ceiling > 0.8 and agreement["synthetic"] > floor + 0.5 * (ceiling - floor), agreement


def test_the_128px_generator_trains_samples_at_its_size_and_its_weights_round_trip(compose_cfg, phantom_dir):
    cfg = compose_cfg(
        "train_diffusion", ["experiment=cpu/diffusion128", "generator=mask_conditioned", "model.ema=null"]
    )
    assert cfg.model.image_size == 128 and cfg.model.noise_scheduler.prediction_type == "v_prediction"
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    data = PairDataset(read_folder(phantom_dir)[:4], 128)
    images = torch.from_numpy(np.stack(data.images).astype(np.float32) / 255)[:, None]
    masks = torch.from_numpy(np.stack(data.masks) > 0).float()[:, None]
    optimizer = torch.optim.AdamW(module.unet.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in module.unet.parameters()]
    for _ in range(2):
        batch = {"image": images, "mask": masks, "trimester": torch.tensor([0, 1, 2, -1])}
        loss = module.diffusion_loss(batch, drop_labels=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and any(
        not torch.equal(a, p) for a, p in zip(before, module.unet.parameters(), strict=True)
    )
    module.eval()
    pairs = module.sample(2, seed=0, sampler="ddim", steps=2, masks=masks[:2])
    assert pairs.shape == (2, 2, 128, 128) and torch.equal(pairs[:, 1:] > 0, masks[:2] > 0.5)
    rebuilt = instantiate(cfg.model)
    rebuilt.unet.load_state_dict(module.unet.state_dict())
    again = rebuilt.eval().sample(2, seed=0, sampler="ddim", steps=2, masks=masks[:2])
    assert torch.allclose(again, pairs, atol=1e-5)


def test_unlabelled_images_join_the_batch_as_the_unconditional_branch(compose_cfg):
    cfg = compose_cfg("train_diffusion", ["generator=mask_conditioned", "model=diffusion/tiny",
                                          "model.unet.num_class_embeds=4"])  # fmt: skip
    module = instantiate(cfg.model)
    pairs = {
        "image": torch.rand(2, 1, 32, 32),
        "mask": torch.ones(2, 1, 32, 32),
        "trimester": torch.tensor([0, 2]),
    }
    images = {
        "image": torch.rand(3, 1, 32, 32),
        "mask": torch.rand(3, 1, 32, 32),
        "trimester": torch.tensor([1] * 3),
    }
    merged = module.with_unlabelled(pairs, images)
    assert torch.equal(merged["image"], torch.cat([pairs["image"], images["image"]]))
    # the images are marked as unlabelled whatever mask the loader gave, and their class is unknown
    assert merged["labelled"].tolist() == [True, True, False, False, False] and merged["mask"][2:].eq(0).all()
    assert merged["trimester"].tolist() == [0, 2, -1, -1, -1]
    assert module.class_labels(merged, drop=False)[2:].eq(module.num_classes).all()  # the null class
    loss = module.training_step({"pairs": pairs, "images": images}, 0)
    assert torch.isfinite(loss)
    # what the UNet sees for an unlabelled image is the dropped-mask input: the null mask, zeros in [-1, 1] (a mask
    # of zeros in [0, 1] would be "no head here", -1, a condition the images do not show)
    seen = []
    module.unet.register_forward_pre_hook(lambda _, args: seen.append(args[0][:, 1:].clone()))
    module.diffusion_loss(merged, drop_labels=False)
    assert seen[0][:2].eq(1).all() and seen[0][2:].eq(0).all()
    joint = instantiate(compose_cfg("train_diffusion", ["model=diffusion/tiny"]).model)
    with pytest.raises(ValueError, match="joint generator learns masks"):
        joint.training_step({"pairs": pairs, "images": images}, 0)
