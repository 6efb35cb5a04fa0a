"""The head-shape prior: fitted to training masks, it draws heads of their sizes, shapes, places and angles."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from fetalgen.diffusion.sampling import head_mask
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.metrics.biometry import fit_ellipse


def training_masks(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.normal(0.22, 0.03, n)  # semi-major as a fraction of the side
    masks = [head_mask(64, a, rng.uniform(0.7, 0.85), (rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)),
                       rng.uniform(-20, 20)) for a in sizes]  # fmt: skip
    return masks, np.array([fit_ellipse(m).semi_major for m in masks])


def test_drawn_heads_match_the_training_heads_and_the_prior_round_trips():
    masks, train_a = training_masks(60)
    prior = ShapePrior.fit(masks)
    assert prior.n == 60 and prior.cov.shape == (6, 6)
    rng = np.random.default_rng(1)
    drawn = [prior.mask(rng, 64) for _ in range(200)]
    drawn_a = np.array([fit_ellipse(m).semi_major for m in drawn])
    assert ks_2samp(train_a, drawn_a).pvalue >= 0.05  # the head-size distribution of the training masks
    assert all(m.any() and not m[0].any() and not m[-1].any() for m in drawn)  # whole heads inside the image
    again = ShapePrior.from_dict(prior.to_dict())
    first, second = again.mask(np.random.default_rng(5), 64), prior.mask(np.random.default_rng(5), 64)
    assert np.array_equal(first, second)  # seeded, and the record holds the whole prior


def test_a_few_masks_give_a_diagonal_prior_and_too_few_are_refused():
    masks, _ = training_masks(5)
    prior = ShapePrior.fit(masks)
    assert np.count_nonzero(prior.cov - np.diag(np.diag(prior.cov))) == 0
    with pytest.raises(ValueError, match="at least 2 masks"):
        ShapePrior.fit([masks[0], np.zeros((64, 64), bool)])
    with pytest.raises(ValueError, match="a shape prior over"):
        ShapePrior.from_dict(prior.to_dict() | {"features": ["a"]})


@pytest.mark.hc18
def test_heads_drawn_from_the_prior_of_real_hc18_masks_have_their_sizes(hc18_dir):
    from fetalgen.data.dataset import PairDataset
    from fetalgen.data.hc18 import read_hc18
    from fetalgen.metrics.biometry import measure_head

    cases = read_hc18(hc18_dir)[::12][:60]  # 60 masks across the set, as the cpu preset's generator sees
    masks = [np.asarray(m) > 0 for m in PairDataset(cases, 32).masks]
    prior = ShapePrior.fit(masks)
    rng = np.random.default_rng(0)
    drawn = [prior.mask(rng, 32) for _ in range(300)]
    hc_train = [m.hc for m in map(measure_head, masks) if m]
    hc_drawn = [m.hc for m in map(measure_head, drawn) if m]
    assert ks_2samp(hc_train, hc_drawn).pvalue >= 0.05  # measured 0.003 before the half-pixel rasterisation
