"""The judge's reference segmenter, trained on real pairs, separates aligned from misaligned masks (with the
agreement functions of fetalgen.metrics.agreement); it is seeded by the seed rule and leaves the global state."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.metrics.agreement import calibrated_agreement, derangement, pair_dice
from fetalgen.synthesis.reference import ReferenceSegmenter


@pytest.fixture(scope="module")
def fitted(phantom_dir: Path) -> tuple[ReferenceSegmenter, torch.Tensor, np.ndarray]:
    data = PairDataset(read_folder(phantom_dir), 32)
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    masks = torch.stack([data[i]["mask"] for i in range(len(data))])
    segmenter = ReferenceSegmenter(32, seed=0)
    losses = segmenter.fit(images[:16], masks[:16], steps=120)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 2
    return segmenter, images[16:], masks[16:, 0].numpy() > 0.5  # 8 pairs it never saw


def test_a_mask_shifted_off_the_head_agrees_less_than_the_aligned_mask(fitted):
    segmenter, images, masks = fitted
    predicted = segmenter.predict(images)
    aligned = pair_dice(predicted, masks)
    shifted = pair_dice(predicted, np.roll(masks, 12, axis=2))
    assert aligned.mean() > 0.7 and (aligned > shifted).all()


def test_the_shuffled_mask_floor_is_below_the_aligned_figure_and_the_ceiling(fitted):
    segmenter, images, masks = fitted
    result = calibrated_agreement(segmenter.predict, images, masks, images, masks, seed=0)
    assert result["floor"] < result["synthetic"] - 0.05 and result["ceiling"] == pytest.approx(
        result["synthetic"]
    )
    assert result["n_synthetic"] == 8 and len(result["per_pair"]) == 8


def test_derangement_moves_every_item_and_is_seeded():
    for n in (2, 3, 10):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and (perm != np.arange(n)).all()
    assert (derangement(10, 1) == derangement(10, 1)).all()


def test_the_same_seed_gives_the_same_segmenter_and_the_global_state_is_untouched():
    torch.manual_seed(123)
    images, masks = torch.rand(4, 1, 16, 16), (torch.rand(4, 1, 16, 16) > 0.5).float()
    before = torch.random.get_rng_state()
    a, b = ReferenceSegmenter(16, seed=4), ReferenceSegmenter(16, seed=4)
    assert a.fit(images, masks, steps=3) == b.fit(images, masks, steps=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    other = ReferenceSegmenter(16, seed=5)
    assert not torch.equal(
        next(other.net.parameters()), next(ReferenceSegmenter(16, seed=4).net.parameters())
    )
