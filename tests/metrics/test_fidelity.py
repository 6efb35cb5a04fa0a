"""Realism, diversity and nearest neighbours on hand-made cases, with a small extractor built here (the tiny SAM
encoder, random init: no download)."""

from pathlib import Path

import pytest
import torch

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.metrics.fidelity import diversity, kid_fid, ms_ssim_scales, nearest_neighbours, save_gallery
from fetalgen.segmentation.build import build_sam
from fetalgen.segmentation.features import SamFeatures, sam_features


@pytest.fixture(scope="module")
def phantoms(phantom_dir: Path) -> torch.Tensor:
    data = PairDataset(read_folder(phantom_dir), 64)
    return torch.stack([data[i]["image"] for i in range(len(data))])


@pytest.fixture(scope="module")
def features() -> SamFeatures:
    return SamFeatures(build_sam("tiny", image_size=64, seed=0), "sam-tiny (random init)")


def test_kid_and_fid_are_near_zero_for_identical_sets_and_large_against_noise(phantoms, features):
    real = features(phantoms)
    same = kid_fid(real, real, subset_size=12, seed=0)
    noise = kid_fid(real, features(torch.rand_like(phantoms)), subset_size=12, seed=0)
    assert abs(same["fid"]) < 1e-6
    # KID assumes independent sets: on a set against itself it reads a hair below 0 (within its noise here).
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3 and noise["kid"] > 100 * abs(same["kid"])
    assert noise["fid"] > 10 and noise["kid"] > 10 * noise["kid_std"]
    assert same["kid_subset_size"] == 12 and same["n_real"] == same["n_synthetic"] == len(phantoms)
    assert kid_fid(real, real, subset_size=12, seed=0) == same  # seeded subsets
    halves = kid_fid(real[::2], real[1::2], subset_size=12)
    assert halves["kid"] < noise["kid"] / 100  # two samples of one distribution


def test_diversity_is_one_for_copies_and_lower_for_different_images(phantoms):
    copies = phantoms[:1].repeat(6, 1, 1, 1)
    assert diversity(copies)["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    varied = diversity(phantoms, max_pairs=40, seed=0)
    assert varied["ms_ssim"] < 0.9 and varied["n_pairs"] == 40 and varied["scales"] == 3
    assert diversity(phantoms[:5])["n_pairs"] == 10  # every pair when there are few
    assert [ms_ssim_scales(s) for s in (32, 64, 256)] == [2, 3, 5]


def test_nearest_neighbours_find_copies_and_mirror_images(phantoms, features, tmp_path):
    train = phantoms[:10]
    synthetic = torch.stack([phantoms[3], phantoms[7].flip(-1), phantoms[15]])
    sim, index = nearest_neighbours(features(synthetic), features(synthetic.flip(-1)), features(train))
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and index[0] == 3
    assert sim[1] == pytest.approx(1.0, abs=1e-5) and index[1] == 7  # a mirrored copy is caught
    assert sim[2] < 1.0 - 1e-4
    path = save_gallery(
        synthetic[:, 0].numpy(), train[:, 0].numpy(), sim, index, ["a", "b", "c"], tmp_path / "g.png", k=2
    )
    assert path.stat().st_size > 1000


def test_a_missing_feature_checkpoint_says_how_to_go_on(tmp_path):
    with pytest.raises(FileNotFoundError, match="make weights.*sam_tiny.*fidelity.enabled=false"):
        sam_features("vit_b", str(tmp_path / "none.pth"))


def test_every_feature_config_names_a_builder(compose_cfg):
    import hydra

    for option in ("sam_tiny", "sam_vit_b", "inception"):
        spec = compose_cfg("sample", ["ckpt_path=-", f"fidelity/features={option}"]).fidelity.features
        assert spec._target_.startswith("fetalgen.segmentation.features.") and "kind" not in spec
    tiny = hydra.utils.instantiate(
        compose_cfg("sample", ["ckpt_path=-", "fidelity/features=sam_tiny"]).fidelity.features
    )
    assert tiny(torch.rand(2, 1, 32, 32)).shape[0] == 2 and tiny.name.startswith(
        "sam-tiny encoder (random init"
    )


def test_cached_features_encode_each_image_once_and_share_the_box_judges_entries(phantoms, tmp_path):
    from functools import partial

    from fetalgen.segmentation.cache import EmbeddingCache
    from fetalgen.segmentation.module import SamFinetuneModule
    from fetalgen.segmentation.predictor import SamBoxPredictor
    from fetalgen.segmentation.preprocess import at_side

    images = phantoms[:4, :, ::2, ::2]  # small generated-like images, brought to the encoder's side by both
    sam = build_sam("tiny", image_size=64, seed=0)
    judge = SamBoxPredictor(SamFinetuneModule(sam, optimizer=partial(torch.optim.AdamW)),
                            cache=EmbeddingCache("disk", tmp_path, encode_batch_size=1))  # fmt: skip
    judge.embed(at_side(images, 64))  # what the box judge does first
    features = sam_features("tiny", None, 64, cache_dir=tmp_path)
    pooled = features(images)
    assert features.cache.hits == 4 and features.cache.misses == 0  # read, not encoded again
    uncached = SamFeatures(build_sam("tiny", image_size=64, seed=0), "plain")(at_side(images, 64))
    assert torch.allclose(pooled, uncached, atol=2e-3)  # the cache stores float16
