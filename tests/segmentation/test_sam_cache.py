"""Embedding cache: keys, memory/disk storage, augmented views, and cached == uncached training."""

from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.segmentation.build import build_sam
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.preprocess import to_encoder_input


@pytest.fixture(scope="module")
def pairs(phantom_dir: Path) -> PairDataset:
    return PairDataset(read_folder(phantom_dir)[:8], image_size=64)


def encoder_of(sam):
    calls = []

    def encode(x):
        calls.append(len(x))
        return sam.image_encoder(to_encoder_input(sam, x))

    return encode, calls


def test_keys_depend_on_image_encoder_and_input_size():
    sam = build_sam("tiny", image_size=64, seed=0)
    cache = EmbeddingCache().bind(sam)
    image = torch.rand(1, 32, 32)
    assert cache.key(image) == cache.key(image.clone())
    assert cache.key(image) != cache.key(image + 1e-3)
    other_weights = EmbeddingCache().bind(build_sam("tiny", image_size=64, seed=1))
    other_size = EmbeddingCache().bind(build_sam("tiny", image_size=128, seed=0))
    other_dtype = EmbeddingCache(dtype="float32").bind(sam)
    assert len({c.key(image) for c in (cache, other_weights, other_size, other_dtype)}) == 4
    with pytest.raises(RuntimeError, match="bind"):
        EmbeddingCache().key(image)
    with pytest.raises(ValueError, match="cache_dir"):
        EmbeddingCache(storage="disk")


def test_memory_cache_computes_each_image_once_and_exactly():
    sam = build_sam("tiny", image_size=64, seed=0)
    cache = EmbeddingCache(dtype="float32").bind(sam)
    encode, calls = encoder_of(sam)
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        direct = encode(images)
    calls.clear()
    first = cache.embed(images, encode)
    again = cache.embed(torch.cat([images[2:], images[:1]]), encode)  # all known
    assert calls == [3] and (cache.hits, cache.misses, len(cache)) == (2, 3, 3)
    assert torch.equal(first, direct) and torch.equal(again, direct[[2, 0]])
    cache.embed(
        torch.stack([images[0], images[0], torch.rand(1, 64, 64)]), encode
    )  # a duplicate and a new one
    assert calls == [3, 1] and len(cache) == 4


def test_disk_cache_fp16_is_shared_and_close(tmp_path: Path):
    sam = build_sam("tiny", image_size=64, seed=0)
    encode, calls = encoder_of(sam)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        direct = encode(images)
    calls.clear()
    first = EmbeddingCache("disk", tmp_path / "cache").bind(sam).embed(images, encode)
    assert len(list((tmp_path / "cache").glob("*/*.pt"))) == 2
    fresh = EmbeddingCache("disk", tmp_path / "cache").bind(sam)  # another run: reads the files
    second = fresh.embed(images, encode)
    assert calls == [2] and fresh.hits == 2 and torch.equal(first, second)
    torch.testing.assert_close(second, direct, rtol=2e-3, atol=2e-3)  # fp16 storage


def train(pairs: PairDataset, cache, epochs: int = 2, **kwargs) -> SamFinetuneModule:
    module = SamFinetuneModule(
        build_sam("tiny", image_size=64, seed=0),
        partial(torch.optim.AdamW, lr=1e-3),
        cache=cache,
        seed=0,
        **kwargs,
    )
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(pairs, batch_size=4, shuffle=False))
    return module


def test_cached_and_uncached_training_give_the_same_model(pairs: PairDataset):
    plain = train(pairs, cache=None)
    cached = train(pairs, cache=partial(EmbeddingCache, dtype="float32"))
    assert (cached.cache.misses, cached.cache.hits) == (8, 8)  # epoch 1 computes, epoch 2 reuses
    for (name, a), b in zip(plain.state_dict().items(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    batch = next(iter(DataLoader(pairs, batch_size=4)))
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]] * 4)
    with torch.no_grad():
        torch.testing.assert_close(
            plain(batch["image"], boxes), cached(batch["image"], boxes), rtol=0, atol=1e-6
        )


def test_seeded_views_of_the_data_layer_are_reused_by_the_cache(pairs: PairDataset):
    viewed = PairDataset(pairs.cases, 64, "strong", views=3, seed=0)
    assert len(viewed) == 3 * len(pairs)
    a, again, other = viewed[1], viewed[1], viewed[2]  # view 1 of pair 0 twice, then its view 2
    assert a["name"] == other["name"] == pairs.cases[0].name and a["index"] == other["index"] == 0
    assert torch.equal(a["image"], again["image"]) and torch.equal(a["mask"], again["mask"])
    assert not torch.equal(a["image"], other["image"])
    assert torch.equal(PairDataset(pairs.cases[:1], 64, "strong", views=3, seed=0)[1]["image"], a["image"])
    module = train(PairDataset(pairs.cases, 64, "weak", views=2, seed=0), cache=EmbeddingCache, epochs=4)
    assert module.cache.misses == len(module.cache) <= 8 * 2  # at most N x K encoder passes, ever
    assert module.cache.hits + module.cache.misses == 4 * 16 and module.cache.hits >= 3 * 16
    with pytest.raises(ValueError, match="views must be >= 1"):
        PairDataset(pairs.cases, 64, "weak", views=0)


def test_lora_turns_the_cache_off():
    module = SamFinetuneModule(
        build_sam("tiny", image_size=64, seed=0),
        partial(torch.optim.AdamW),
        trainable="lora",
        cache=EmbeddingCache,
    )
    assert module.cache is None


def test_misses_are_encoded_a_few_images_at_a_time_with_the_same_result():
    from fetalgen.segmentation.cache import encode_in_chunks

    calls = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x.mean(dim=1, keepdim=True) * 2

    images = torch.rand(5, 1, 8, 8)
    assert torch.equal(encode_in_chunks(encode, images, 2), encode(images)) and calls == [2, 2, 1, 5]
    cache = EmbeddingCache(encode_batch_size=2)
    cache.namespace = "test"
    calls.clear()
    cache.embed(images, encode)
    assert calls == [2, 2, 1] and cache.misses == 5
