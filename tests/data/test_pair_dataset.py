"""PairDataset: item format, working-resolution pixel size, trimester, raise/skip of bad pairs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalgen.data.cases import DataError
from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.data.hc18 import trimester_from_hc


def test_items_follow_the_contract(phantom_dir: Path) -> None:
    cases = read_folder(phantom_dir, cohort="phantom")[:4]
    ds = PairDataset(cases, image_size=32)
    assert len(ds) == 4
    item = ds[1]
    assert item["image"].shape == item["mask"].shape == (1, 32, 32)
    assert item["image"].dtype == item["mask"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0 and item["image"].max() > 0.3
    assert set(torch.unique(item["mask"]).tolist()) == {0.0, 1.0}
    assert item["name"] == cases[1].name and item["index"] == 1
    assert item["pixel_size_mm"] == pytest.approx(cases[1].pixel_size_mm * 200 / 32)  # 135x200 -> 32
    assert item["hc_mm"] == pytest.approx(cases[1].hc_mm)
    assert item["trimester"] == trimester_from_hc(cases[1].hc_mm)


def test_unknown_pixel_size_and_hc(phantom_dir: Path) -> None:
    case = dataclasses.replace(read_folder(phantom_dir)[0], pixel_size_mm=None, hc_mm=None)
    item = PairDataset([case], image_size=16)[0]
    assert math.isnan(item["pixel_size_mm"]) and math.isnan(item["hc_mm"]) and item["trimester"] == -1


def test_augmentation_keeps_items_valid(phantom_dir: Path) -> None:
    cases = read_folder(phantom_dir)[:2]
    ds = PairDataset(cases, image_size=32, augment="strong", seed=0)
    plain = PairDataset(cases, image_size=32)
    changed = False
    for _ in range(4):
        item = ds[0]
        assert item["mask"].sum() > 0 and set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
        changed |= not torch.equal(item["image"], plain[0]["image"])
    assert changed


def _corrupt_copy(phantom_dir: Path, tmp_path: Path):
    cases = read_folder(phantom_dir)[:3]
    bad_mask = tmp_path / "bad_mask.png"
    bad_mask.write_bytes(b"\x89PNG not really")
    return [cases[0], dataclasses.replace(cases[1], mask_path=bad_mask), cases[2]]


def test_raise_on_bad_pair(phantom_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="bad_mask.png.*unreadable or corrupt mask"):
        PairDataset(_corrupt_copy(phantom_dir, tmp_path), image_size=16)


def test_skip_bad_pair_warns_with_count(phantom_dir: Path, tmp_path: Path) -> None:
    cases = _corrupt_copy(phantom_dir, tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 bad file\(s\):\n.*bad_mask.png"):
        ds = PairDataset(cases, image_size=16, on_bad_pair="skip")
    assert len(ds) == 2 and [c.name for c in ds.cases] == [cases[0].name, cases[2].name]
    assert len(ds.skipped) == 1 and np.isfinite(ds[1]["pixel_size_mm"])


def test_images_without_masks_read_like_pairs_and_name_a_bad_file(phantom_dir: Path, tmp_path: Path) -> None:
    from fetalgen.data.dataset import ImageDataset

    cases = read_folder(phantom_dir)[:3]
    pairs, images = PairDataset(cases, image_size=24), ImageDataset(cases, image_size=24)
    item = images[1]
    assert (
        torch.equal(item["image"], pairs[1]["image"]) and item["mask"].eq(0).all() and item["trimester"] == -1
    )
    bad = tmp_path / "bad_image.png"
    bad.write_bytes(b"\x89PNG not really")
    broken = [cases[0], dataclasses.replace(cases[1], image_path=bad)]
    with pytest.raises(DataError, match="bad_image.png"):
        ImageDataset(broken, image_size=24)
    with pytest.warns(UserWarning, match=r"skipped 1 bad file"):
        kept = ImageDataset(broken, image_size=24, on_bad_pair="skip")
    assert [c.name for c in kept.cases] == [cases[0].name] and len(kept.skipped) == 1
