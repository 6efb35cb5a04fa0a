"""Shared fixtures: phantom data, the real HC18 data when present, and Hydra config composition."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from fetalgen.cli import CONFIG_DIR, resolved_paths

# Tiny models gain nothing from threads, and two OpenMP threads on a busy 2-core machine stall badly.
torch.set_num_threads(1)
# `make test` runs one pytest-xdist worker per core: the subprocesses of each get that core alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest runs first (``slow(minutes=...)``, then the other slow ones): the worker whose share they open
    starts them at once, the other takes the short tests and then steals from its queue (``--dist worksteal``), so
    the suite does not end waiting on a long run started late."""

    def minutes(item: pytest.Item) -> float:
        slow = item.get_closest_marker("slow")
        return 0.0 if slow is None else float(slow.kwargs.get("minutes", 1))

    items.sort(key=minutes, reverse=True)  # stable: collection order within equal estimates


def hc18_root() -> Path | None:
    """The real HC18 folder where the tasks look (``paths.hc18_dir``: FETALGEN_HC18_DIR, else data/hc18), or None
    if absent."""
    root = resolved_paths()["hc18_dir"]
    return root if (root / "training_set").is_dir() else None


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    root = hc18_root()
    if root is None:
        pytest.skip("real HC18 data absent: set FETALGEN_HC18_DIR or run `make data`")
    return root


TEST_GENERATOR = {"checkpoint": "", "sha256": "0" * 64, "global_step": 0}  # the generator of the test sets


def seal_synthetic_set(root: Path, training_cases: list | None = None) -> Path:
    """Write ``provenance.json`` as fetalgen-sample does last (the manifest's hash, the generator of its lines)."""
    from fetalgen.data.provenance import write_synthetic_provenance

    return write_synthetic_provenance(root, TEST_GENERATOR, training_cases or [])


@pytest.fixture(scope="session")
def seal():
    """:func:`seal_synthetic_set`, for test modules."""
    return seal_synthetic_set


@pytest.fixture(scope="session")
def other_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantom pairs of another seed: stand-ins for synthetic pairs that copy no image of ``phantom_dir``."""
    from fetalgen.data.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("other_phantoms")
    write_phantom_dataset(root, n=12, seed=1, shape=(135, 200))
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 phantom pairs (small, 135x200) in the generic folder layout, shared by the whole session."""
    from fetalgen.data.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root, n=24, seed=0, shape=(135, 200))
    return root


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a primary config from conf/ with overrides, rooted in a temporary directory.

    ``paths.output_dir`` (normally Hydra's run dir) and the log dir point into ``tmp_path``.
    """

    def _compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "output")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def _fake_run(root: Path, num: int, num_real: int, ratio: float, seed: int, dice: float | None) -> None:
    import json

    from omegaconf import OmegaConf

    run = root / str(num)
    (run / ".hydra").mkdir(parents=True)
    cfg = {"task_name": "finetune", "seed": seed, "data": {"num_real": num_real, "synthetic_ratio": ratio}}
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    overrides = [f"data.num_real={num_real}", f"data.synthetic_ratio={ratio}", f"seed={seed}"]
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    if dice is not None:
        metrics = {"val/dice": dice, "test/hc18/dice": dice - 0.1, "test/hc18/baseline_dice": 0.5}
        (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A constructed 2x2 sweep (num_real x synthetic_ratio) over two seeds; one run failed (no metrics).

    Val Dice per (num_real, ratio): (5, 0) -> 0.6, 0.8; (5, 1) -> 0.7, 0.9; (10, 0) -> 0.8, 0.8;
    (10, 1) -> 0.9 and a failed run. Test Dice is val Dice - 0.1, the baseline 0.5.
    """
    root = tmp_path / "sweep"
    values = {(5, 0.0): (0.6, 0.8), (5, 1.0): (0.7, 0.9), (10, 0.0): (0.8, 0.8), (10, 1.0): (0.9, None)}
    num = 0
    for (num_real, ratio), dices in values.items():
        for seed, dice in enumerate(dices):
            _fake_run(root, num, num_real, ratio, seed, dice)
            num += 1
    return root


@pytest.fixture(scope="session")
def phantom_synthetic(other_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic-layout dataset (manifest.jsonl, provenance.json) made of 9 phantom pairs of another seed than
    ``phantom_dir`` (no copy of its images); every third failed QC.

    It stands in for a diffusion model's output where a test needs reliable pairs rather than a model.
    """
    import shutil

    from fetalgen.data.synthetic import ManifestEntry

    root = tmp_path_factory.mktemp("synthetic")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    lines = []
    for i, image in enumerate(sorted((other_phantoms / "images").glob("*.png"))[:9]):
        mask = next((other_phantoms / "masks").glob(f"{image.stem}*"))
        name = f"syn_{i:06d}"
        shutil.copy(image, root / "images" / f"{name}.png")
        shutil.copy(mask, root / "masks" / f"{name}.png")
        entry = ManifestEntry(
            index=i, name=name, image=f"images/{name}.png", mask=f"masks/{name}.png", seed=i,
            checkpoint_sha256="0" * 64, sampler="sde-dpmsolver++", steps=20, qc_pass=i % 3 != 0,
            qc={"ellipse_iou": 0.95}, max_train_similarity=0.5,
        )  # fmt: skip
        lines.append(entry.to_json())
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    seal_synthetic_set(root)
    return root


@pytest.fixture(scope="session")
def judged_synthetic(
    phantom_synthetic: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of ``phantom_synthetic`` judged against 8 phantom training pairs (tiny random-init SAM features, a
    briefly trained agreement segmenter), with the ``summary.json`` fetalgen-sample would write."""
    import json
    import shutil

    from fetalgen.data.dataset import PairDataset
    from fetalgen.data.folder import read_folder
    from fetalgen.segmentation.features import sam_features
    from fetalgen.synthesis.judge import Judge, RealPairs

    root = tmp_path_factory.mktemp("judged") / "synthetic"
    shutil.copytree(phantom_synthetic, root)
    train = RealPairs.from_dataset(PairDataset(read_folder(phantom_dir)[:8], 64))
    fidelity = Judge(sam_features("tiny", None, 64), segmenter_steps=30, kid_subsets=10)(root, train)
    (root / "summary.json").write_text(json.dumps({"n": 9, "fidelity": fidelity}))
    seal_synthetic_set(root)  # the judge rewrote the manifest
    return root
