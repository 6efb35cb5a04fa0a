"""PairDataModule: subject-wise splits, split files, synthetic mixing counts, seeded loaders, the configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import seal_synthetic_set
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fetalgen.cli import CONFIG_DIR
from fetalgen.data.cases import DataError
from fetalgen.data.datamodule import PairDataModule
from fetalgen.data.folder import read_folder
from fetalgen.data.synthetic import MANIFEST, ManifestEntry


@pytest.fixture(scope="module")
def real(phantom_dir: Path):
    """The 24 phantom cases, regrouped into 12 subjects of 2 frames so subject-wise splitting matters."""
    cases = read_folder(phantom_dir, cohort="phantom")
    return [dataclasses.replace(c, subject=f"s{i // 2:02d}", frame=i % 2 + 1) for i, c in enumerate(cases)]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 synthetic pairs, 3 of which failed QC."""
    root = tmp_path_factory.mktemp("synthetic")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    lines = []
    for i in range(10):
        name = f"syn_{i:06d}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((32, 32), 60 + i, np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        cv2.ellipse(mask, (16, 16), (10, 8), 0, 0, 360, 255, -1)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
        entry = ManifestEntry(
            index=i,
            name=name,
            image=f"images/{name}.png",
            mask=f"masks/{name}.png",
            seed=i,
            checkpoint_sha256="0" * 64,
            sampler="ddim",
            steps=10,
            qc_pass=i not in (2, 5, 7),
        )
        lines.append(entry.to_json())
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    seal_synthetic_set(root)
    return root


def _subjects(cases) -> set[str]:
    return {c.subject for c in cases}


def test_split_sizes_subjects_and_determinism(real) -> None:
    dm = PairDataModule(real, image_size=16, num_real=8, num_val=6, num_test=4, seed=1)
    assert (len(dm.train_cases), len(dm.val_cases), len(dm.test_cases)) == (8, 6, 4)
    tr, va, te = _subjects(dm.train_cases), _subjects(dm.val_cases), _subjects(dm.test_cases)
    assert not (tr & va) and not (tr & te) and not (va & te)
    again = PairDataModule(real, image_size=16, num_real=8, num_val=6, num_test=4, seed=1)
    assert again.train_cases == dm.train_cases and again.val_cases == dm.val_cases
    fewer = PairDataModule(real, image_size=16, num_real=4, num_val=6, num_test=4, seed=1)
    assert fewer.val_cases == dm.val_cases and fewer.test_cases == dm.test_cases  # num_real leaves val alone
    with pytest.raises(ValueError, match="exceed the 24 real images"):
        PairDataModule(real, image_size=16, num_real=16, num_val=6, num_test=4)


def test_synthetic_mixing_counts(real, synthetic_dir: Path) -> None:
    dm = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, seed=0, synthetic_dir=synthetic_dir, synthetic_ratio=0.5
    )
    assert len(dm.synthetic_cases) == 3  # round(0.5 * 6)
    assert dm.synthetic_counts == {
        "total": 10, "kept": 7, "qc_failed": 3, "memorised": 0, "below_agreement": 0, "memorised_excluded": 0,
        "used": 3,
    }  # fmt: skip
    failed = {"syn_000002", "syn_000005", "syn_000007"}
    assert not failed & {c.name for c in dm.synthetic_cases}
    dm.setup()
    assert len(dm.train_set) == 9 and len(dm.val_set) == 4
    assert all(c.cohort != "synthetic" for c in dm.val_cases + dm.test_cases)
    by_num = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, synthetic_dir=synthetic_dir, num_synthetic=7
    )
    assert by_num.synthetic_counts["used"] == 7
    other_seed = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, seed=5, synthetic_dir=synthetic_dir, num_synthetic=3
    )
    assert len(other_seed.synthetic_cases) == 3
    with pytest.raises(ValueError, match="8 synthetic pairs asked for but .* has only 7 that passed QC"):
        PairDataModule(
            real, image_size=16, num_real=6, num_val=4, synthetic_dir=synthetic_dir, num_synthetic=8
        )
    with pytest.raises(ValueError, match="synthetic_dir is not set"):
        PairDataModule(real, image_size=16, num_real=6, num_val=4, synthetic_ratio=1.0)
    every = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, synthetic_dir=synthetic_dir, num_synthetic="all"
    )
    assert every.synthetic_counts["used"] == 7 and not failed & {c.name for c in every.synthetic_cases}
    with pytest.raises(ValueError, match="num_synthetic=all but synthetic_dir is not set"):
        PairDataModule(real, image_size=16, num_real=6, num_val=4, num_synthetic="all")


def test_loaders_are_seeded_and_test_may_be_empty(real) -> None:
    def first_batch_names(seed: int) -> list[str]:
        dm = PairDataModule(
            real, image_size=16, num_real=8, num_val=4, seed=seed, batch_size=4, augment="weak"
        )
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape == (4, 1, 16, 16) and batch["mask"].dtype == torch.float32
        return list(batch["name"])

    assert first_batch_names(2) == first_batch_names(2)
    dm = PairDataModule(real, image_size=16, num_real=8, num_val=4, seed=2, batch_size=4)
    assert dm.test_dataloader() == []
    val = list(dm.val_dataloader())
    assert sum(len(b["name"]) for b in val) == 4


def test_worker_processes_get_their_own_augmentation_seed(real) -> None:
    copies = [dataclasses.replace(real[0], name=f"copy{i}", subject=f"copy{i}") for i in range(4)]  # one pair
    dm = PairDataModule(
        copies, image_size=16, num_real=4, num_val=0, seed=0, batch_size=1, num_workers=2, augment="strong"
    )
    loader = dm.train_dataloader()
    first = [b["image"] for b in loader]
    again = [b["image"] for b in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # reproducible with workers
    # Workers take batches in turn: with one seed they would draw the same two augmentations of the same pair.
    worker_0, worker_1 = first[0::2], first[1::2]
    assert not all(torch.equal(a, b) for a, b in zip(worker_0, worker_1, strict=True))


def test_split_file_and_num_real_subset(real, tmp_path: Path) -> None:
    names = [c.name for c in real]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:10], "val": names[10:14], "test": names[14:16]}))
    dm = PairDataModule(real, image_size=16, num_real=10, num_val=0, split_file=split)
    assert [c.name for c in dm.train_cases] == names[:10] and [c.name for c in dm.test_cases] == names[14:16]
    sub = PairDataModule(real, image_size=16, num_real=4, num_val=0, split_file=split, seed=3)
    assert len(sub.train_cases) == 4 and {c.name for c in sub.train_cases} <= set(names[:10])
    with pytest.raises(ValueError, match="lists only 10 training cases"):
        PairDataModule(real, image_size=16, num_real=11, num_val=0, split_file=split)
    split.write_text(json.dumps({"train": ["nope"], "val": []}))
    with pytest.raises(DataError, match="nope"):
        PairDataModule(real, image_size=16, num_real=1, num_val=0, split_file=split)


def _data_cfg(name: str, data_dir: Path, **paths: str):
    """The composed ``data=<name>`` config (with its base) and the paths it interpolates."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        full = compose(config_name="split", overrides=[f"data={name}"])
    GlobalHydra.instance().clear()
    cfg = OmegaConf.create({"seed": 0, "paths": full.paths, "data": full.data})
    cfg.paths.data_dir = str(data_dir)
    for k, v in paths.items():
        cfg.paths[k] = v
    return cfg


def test_phantom_config_instantiates(tmp_path: Path) -> None:
    cfg = _data_cfg("phantom", tmp_path)
    cfg.data.source.n = 12
    cfg.data.source.shape = [64, 96]
    cfg.data.num_real, cfg.data.num_val, cfg.data.image_size = 6, 3, 16
    dm = instantiate(cfg.data)
    assert isinstance(dm, PairDataModule) and len(dm.train_cases) == 6
    assert (tmp_path / "phantom" / "images" / "phantom_0011.png").is_file()
    assert next(iter(dm.train_dataloader()))["image"].shape[-1] == 16


@pytest.mark.parametrize(
    ("name", "key", "fix"),
    [
        ("hc18", "hc18_dir", "make data"),
        ("spanish", "spanish_dir", "FETALGEN_SPANISH_DIR"),
        ("african", "african_dir", "FETALGEN_AFRICAN_DIR"),
    ],
)
def test_missing_data_dir_says_how_to_fix(tmp_path: Path, name: str, key: str, fix: str) -> None:
    cfg = _data_cfg(name, tmp_path, **{key: str(tmp_path / "absent")})
    with pytest.raises(Exception, match=fix):
        instantiate(cfg.data)


def test_folder_config_requires_root(tmp_path: Path, phantom_dir: Path) -> None:
    cfg = _data_cfg("folder", tmp_path)
    assert OmegaConf.is_missing(cfg.data.source, "root")
    cfg.data.source.root = str(phantom_dir)
    cfg.data.num_real, cfg.data.num_val = 4, 2
    assert len(instantiate(cfg.data).train_cases) == 4


def test_hc18_config_on_real_data(tmp_path: Path, hc18_dir: Path) -> None:
    cfg = _data_cfg("hc18", tmp_path, hc18_dir=str(hc18_dir))
    dm = instantiate(cfg.data)
    assert len(dm.train_cases) == 20 and len(dm.val_cases) == 10
    assert not _subjects(dm.train_cases) & _subjects(dm.val_cases)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 64, 64) and batch["mask"].sum() > 0


def test_balance_trimesters_takes_a_third_from_each(real) -> None:
    from fetalgen.data.hc18 import trimester_from_hc

    hcs = [80.0, 150.0, 300.0]  # one per trimester, assigned per subject
    cases = [dataclasses.replace(c, hc_mm=hcs[int(c.subject[1:]) % 3]) for c in real]
    dm = PairDataModule(cases, image_size=16, num_real=6, num_val=2, seed=0, balance_trimesters=True)
    counts = np.bincount([trimester_from_hc(c.hc_mm) for c in dm.train_cases], minlength=3)
    assert counts.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="split evenly over 3 trimesters"):
        PairDataModule(cases, image_size=16, num_real=4, num_val=2, balance_trimesters=True)
    with pytest.raises(ValueError, match="head circumference of every case"):
        no_hc = [dataclasses.replace(c, hc_mm=None) for c in real]
        PairDataModule(no_hc, image_size=16, num_real=6, num_val=2, balance_trimesters=True)


def _flag_memorised(src: Path, dst: Path, memorised: set[int]) -> Path:
    """A copy of ``src`` (a synthetic set) whose pairs ``memorised`` are flagged as near-copies."""
    import shutil

    shutil.copytree(src, dst)
    lines = []
    for line in (src / MANIFEST).read_text().splitlines():
        entry = json.loads(line)
        entry["memorised"] = entry["index"] in memorised
        entry["max_train_similarity"] = 0.99 if entry["memorised"] else 0.5
        lines.append(json.dumps(entry))
    (dst / MANIFEST).write_text("\n".join(lines) + "\n")
    seal_synthetic_set(dst)  # as fetalgen-sample would have written it
    return dst


def test_memorised_pairs_are_excluded_by_default_and_counted(
    real, synthetic_dir: Path, tmp_path: Path
) -> None:
    flagged = _flag_memorised(synthetic_dir, tmp_path / "syn", {0, 1, 2})  # pair 2 also failed QC
    dm = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, synthetic_dir=flagged, num_synthetic="all"
    )
    assert {c.name for c in dm.synthetic_cases} == {f"syn_{i:06d}" for i in (3, 4, 6, 8, 9)}
    assert dm.synthetic_counts["memorised_excluded"] == 2 and dm.synthetic_counts["qc_failed"] == 3
    kept = PairDataModule(
        real,
        image_size=16,
        num_real=6,
        num_val=4,
        synthetic_dir=flagged,
        num_synthetic="all",
        keep_memorised=True,
    )
    assert len(kept.synthetic_cases) == 7 and kept.synthetic_counts["memorised_excluded"] == 0
    assert kept.synthetic_counts["memorised"] == 2  # kept, and said so in the log


def test_a_generator_that_saw_a_held_out_subject_is_refused(
    real, synthetic_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from fetalgen.data.provenance import LeakageError, case_records, write_synthetic_provenance

    dm = PairDataModule(real, image_size=16, num_real=6, num_val=4, num_test=4)
    syn = tmp_path / "syn"
    shutil.copytree(synthetic_dir, syn)
    write_synthetic_provenance(
        syn, {"sha256": "0" * 64}, case_records(dm.train_cases)
    )  # the training pool only
    ok = PairDataModule(
        real, image_size=16, num_real=6, num_val=4, num_test=4, synthetic_dir=syn, num_synthetic=2
    )
    assert ok.generator_cases == case_records(dm.train_cases)
    other = dm.test_cases[0]
    sibling = next(c for c in real if c.subject == other.subject and c.name != other.name)
    write_synthetic_provenance(
        syn, {"sha256": "0" * 64}, case_records([sibling])
    )  # a held-out subject's frame
    pattern = f"2 test case.*{other.name} \\(subject {other.subject}, as {sibling.name}\\), {sibling.name} \\(the same"
    with pytest.raises(LeakageError, match=pattern):
        PairDataModule(
            real, image_size=16, num_real=6, num_val=4, num_test=4, synthetic_dir=syn, num_synthetic=2
        )
    # an image the generator saw only without its mask (its unlabelled pool) is held to the same guard
    write_synthetic_provenance(syn, {"sha256": "0" * 64}, case_records([other], labelled=False))
    with pytest.raises(LeakageError, match=f"test case.*{other.name} \\(the same image\\)"):
        PairDataModule(
            real, image_size=16, num_real=6, num_val=4, num_test=4, synthetic_dir=syn, num_synthetic=2
        )
    # Real-only arms of a sweep that names the set do not read it (nothing of the generator reaches SAM).
    real_only = PairDataModule(real, image_size=16, num_real=6, num_val=4, num_test=4, synthetic_dir=syn)
    assert real_only.generator_cases is None and real_only.synthetic_cases == []


def test_a_manifest_path_outside_the_set_is_refused(synthetic_dir: Path, tmp_path: Path) -> None:
    import shutil

    from fetalgen.data.synthetic import read_synthetic

    root = tmp_path / "syn"
    shutil.copytree(synthetic_dir, root)
    lines = (root / MANIFEST).read_text().splitlines()
    entry = json.loads(lines[0]) | {"image": "../../elsewhere/012_HC.png"}
    (root / MANIFEST).write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="index 0 names .*012_HC.png, outside the set: refused"):
        read_synthetic(root)


def test_the_agreement_filter_leaves_out_low_pairs_and_counts_them(
    real, synthetic_dir: Path, tmp_path: Path
) -> None:
    import shutil

    root = tmp_path / "syn"
    shutil.copytree(synthetic_dir, root)
    lines = (root / MANIFEST).read_text().splitlines()
    judged = [json.dumps(json.loads(line) | {"pair_agreement": i / 10}) for i, line in enumerate(lines)]
    (root / MANIFEST).write_text("\n".join(judged) + "\n")
    seal_synthetic_set(root)
    dm = PairDataModule(
        real,
        image_size=16,
        num_real=6,
        num_val=4,
        synthetic_dir=root,
        num_synthetic="all",
        min_agreement=0.55,
    )
    # QC failed: 2, 5, 7; below 0.55: 0, 1, 3, 4 (2 and 5 counted as QC failures first)
    assert {c.name for c in dm.synthetic_cases} == {f"syn_{i:06d}" for i in (6, 8, 9)}
    assert dm.synthetic_counts["below_agreement"] == 4 and dm.synthetic_counts["qc_failed"] == 3
    with pytest.raises(ValueError, match="only 3 that passed QC.*4 below data.min_agreement"):
        PairDataModule(real, image_size=16, num_real=6, num_val=4, synthetic_dir=root, num_synthetic=5,
                       min_agreement=0.55)  # fmt: skip
    with pytest.raises(DataError, match="no pair_agreement: judge the set"):  # a set never judged: refused
        PairDataModule(real, image_size=16, num_real=6, num_val=4, synthetic_dir=synthetic_dir, num_synthetic="all",
                 min_agreement=0.5)  # fmt: skip


def test_a_seeded_split_without_a_split_file_warns_that_seeds_change_the_test_set(
    real, caplog, tmp_path: Path
):
    with caplog.at_level("WARNING", logger="fetalgen.data.datamodule"):
        a = PairDataModule(real, image_size=16, num_real=4, num_val=4, num_test=4, seed=0)
        b = PairDataModule(real, image_size=16, num_real=4, num_val=4, num_test=4, seed=1)
    assert {c.name for c in a.test_cases} != {c.name for c in b.test_cases}  # what the warning is about
    assert caplog.text.count("no data.split_file") == 2 and "fetalgen-split" in caplog.text
    caplog.clear()
    split = tmp_path / "split"
    split.mkdir()
    for part, cases in (("train", a.train_cases), ("val", a.val_cases), ("test", a.test_cases)):
        (split / f"{part}.txt").write_text("\n".join(c.name for c in cases) + "\n")
    with caplog.at_level("WARNING", logger="fetalgen.data.datamodule"):
        PairDataModule(real, image_size=16, num_real=4, num_val=4, num_test=4, split_file=split, seed=1)
    assert "no data.split_file" not in caplog.text


def test_unlabelled_images_are_the_pools_rest_without_masks(real) -> None:
    from fetalgen.data.datamodule import NO_MASK

    dm = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled="all")
    labelled = {c.name for c in dm.train_cases}
    held = {c.name for c in dm.val_cases + dm.test_cases}
    assert len(dm.unlabelled_cases) == 24 - 4 - 4 - 4
    assert not {c.name for c in dm.unlabelled_cases} & (labelled | held)
    assert {c.mask_path for c in dm.unlabelled_cases} == {NO_MASK}  # no mask reaches anything downstream
    some = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled=5)
    again = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled=5)
    assert len(some.unlabelled_cases) == 5 and some.unlabelled_cases == again.unlabelled_cases  # seeded
    assert some.train_cases == dm.train_cases  # choosing them changes nothing else
    assert PairDataModule(real, 32, num_real=4, num_val=4, num_test=4).unlabelled_cases == []
    with pytest.raises(ValueError, match="pool holds 12 unlabelled images"):
        PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled=13)


def test_unlabelled_images_join_the_training_batches_only_when_asked(real) -> None:
    dm = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled=6, batch_size=2)
    assert isinstance(dm.train_dataloader(), torch.utils.data.DataLoader)  # by default: the pairs alone
    dm.unlabelled_in_batches = True
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # an epoch is one pass over the 4 pairs
    for batch, _, _ in batches:
        assert batch["pairs"]["image"].shape == batch["images"]["image"].shape == (2, 1, 32, 32)
        assert set(batch["images"]["name"]) <= {c.name for c in dm.unlabelled_cases}
        assert batch["images"]["mask"].eq(0).all() and batch["pairs"]["mask"].sum() > 0
    assert len(dm.unlabelled_set) == 6 and not dm.skipped()


def test_a_test_image_among_the_unlabelled_images_is_refused(real, tmp_path: Path) -> None:
    from fetalgen.data.provenance import LeakageError

    dm = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0)
    pool = [c.name for c in real if c not in dm.val_cases + dm.test_cases + dm.train_cases]
    listed = tmp_path / "unlabelled.txt"
    listed.write_text("\n".join([*pool[:3], dm.test_cases[0].name]) + "\n")
    with pytest.raises(
        LeakageError, match=f"unlabelled images .*2 test case.*{dm.test_cases[0].name} \\(the same image\\)"
    ):
        PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled="all",
                       unlabelled_list=listed)  # fmt: skip
    listed.write_text("\n".join([*pool[:3], dm.train_cases[0].name]) + "\n")  # a labelled one: left out
    ok = PairDataModule(real, 32, num_real=4, num_val=4, num_test=4, seed=0, unlabelled="all",
                        unlabelled_list=listed)  # fmt: skip
    assert [c.name for c in ok.unlabelled_cases] == pool[:3]


def test_several_sets_are_pooled_with_their_counts_and_a_name_clash_is_refused(
    real, synthetic_dir: Path, tmp_path: Path
) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(synthetic_dir, other)
    with pytest.raises(ValueError, match="holds pairs named as another set's"):
        PairDataModule(
            real, 16, num_real=6, num_val=4, synthetic_dir=[synthetic_dir, other], num_synthetic="all"
        )
    lines = (other / MANIFEST).read_text().replace("syn_", "pseudo_")  # the same pairs, under other names
    for folder in ("images", "masks"):
        for path in (other / folder).iterdir():
            path.rename(path.with_name(path.name.replace("syn_", "pseudo_")))
    (other / MANIFEST).write_text(lines)
    seal_synthetic_set(other)
    both = PairDataModule(
        real, 16, num_real=6, num_val=4, synthetic_dir=[synthetic_dir, other], num_synthetic="all"
    )
    assert both.synthetic_counts["total"] == 20 and both.synthetic_counts["qc_failed"] == 6
    assert both.synthetic_counts["used"] == len(both.synthetic_cases) == 14
