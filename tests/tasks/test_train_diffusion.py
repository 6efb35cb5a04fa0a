"""fetalgen-train-diffusion and fetalgen-sample through their real Hydra configs, shrunk to tiny sizes."""

import csv
import json
from pathlib import Path

import cv2
import hydra
import pytest

from fetalgen.data.cases import DataError
from fetalgen.data.synthetic import read_manifest
from fetalgen.tasks.sample import synthesize
from fetalgen.tasks.train_diffusion import train_diffusion

TINY = [
    "model=diffusion/tiny",
    "data.num_real=8",
    "data.num_val=4",
    "data.source.n=12",
    "data.source.shape=[68,100]",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.sample_grid.every_n_steps=2",
    "callbacks.sample_grid.n=4",
    "callbacks.sample_grid.steps=4",
]


@pytest.mark.parametrize("preset,size", [("tiny", 32), ("small", 64), ("base", 128), ("paper", 256)])
def test_every_preset_composes_and_wires_the_image_size(compose_cfg, preset, size):
    cfg = compose_cfg("train_diffusion", [f"model=diffusion/{preset}"])
    assert cfg.model.image_size == cfg.data.image_size == cfg.model.unet.sample_size == size
    unet = hydra.utils.instantiate(cfg.model.unet)
    assert unet.config.in_channels == unet.config.out_channels == 2
    # the deepest feature map is at least 4 px: the UNet can downsample the preset's image size
    assert size // 2 ** (len(unet.config.block_out_channels) - 1) >= 4


def test_train_then_sample_through_the_configs(compose_cfg, tmp_path, capsys):
    cfg = compose_cfg("train_diffusion", [*TINY, "logger=csv"])
    metrics = train_diffusion(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["global_step"] == 2 and metrics["train/loss"] > 0 and "val/loss" in metrics
    assert Path(metrics["checkpoint"]) == out / "checkpoints" / "last.ckpt"
    assert (out / "checkpoints" / "step_000002.ckpt").is_file()
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    grid = cv2.imread(str(out / "samples" / "step_000002.png"))
    assert grid is not None and grid.shape[0] > 128 and grid.shape[1] > 2 * 128
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").read_text().splitlines()))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train/loss", "val/loss"} <= logged and any(k.startswith("lr-") for k in logged)

    sample_args = [
        f"ckpt_path={metrics['checkpoint']}",
        "n=5",
        "batch_size=4",
        "steps=4",
        f"out={tmp_path / 'synthetic'}",
        "progress=false",
        "fidelity/features=sam_tiny",
        "fidelity.segmenter_steps=20",
    ]
    sample = compose_cfg(
        "sample", [*sample_args, "logger=csv", f"logger.csv.save_dir={tmp_path / 'sample_log'}"]
    )
    result = synthesize(sample)
    (logged,) = csv.DictReader((tmp_path / "sample_log" / "csv" / "metrics.csv").read_text().splitlines())
    assert float(logged["qc_pass_rate"]) == result["qc_pass_rate"]
    assert {"agreement_ceiling", "memorisation_rate"} <= set(logged)  # the judge's figures
    root = tmp_path / "synthetic"
    entries = read_manifest(root)
    assert result["n"] == 5 and [e.index for e in entries] == list(range(5))
    assert all(e.max_train_similarity is not None and e.pixel_size_mm > 0 for e in entries)
    assert all(e.sampler == "sde-dpmsolver++" and e.steps == 4 for e in entries)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["head_size_px"]["train"]["n"] == 8  # the training split of the checkpoint's data config
    # The set is judged: per pair in the manifest, per set in the summary, the extractor named.
    train_names = {r["name"] for r in json.loads((root / "provenance.json").read_text())["training_cases"]}
    assert all(0 <= e.pair_agreement <= 1 and -1 <= e.feature_similarity <= 1 for e in entries)
    assert {e.nearest_train for e in entries} <= train_names
    fidelity = summary["fidelity"]
    assert fidelity["features"].startswith("sam-tiny encoder (random init")
    assert {"synthetic", "ceiling", "floor"} <= set(fidelity["agreement"]) and "train" in fidelity[
        "diversity"
    ]
    assert (root / "nearest_neighbours.png").stat().st_size > 1000
    assert "pair agreement" in capsys.readouterr().out  # the printed table

    # Provenance is written last, with the manifest's hash, and checks out; a refused re-sample into the same
    # folder with another generator leaves it naming the first one.
    from fetalgen.data.provenance import read_synthetic_provenance

    provenance = json.loads((root / "provenance.json").read_text())
    assert provenance["generator"]["sha256"] == entries[0].checkpoint_sha256
    assert read_synthetic_provenance(root)["training_cases"] == provenance["training_cases"]
    other = train_diffusion(compose_cfg("train_diffusion", [*TINY, "logger=none", "seed=1"]))
    with pytest.raises(DataError, match="checkpoint_sha256"):
        synthesize(compose_cfg("sample", [f"ckpt_path={other['checkpoint']}", *sample_args[1:]]))
    assert json.loads((root / "provenance.json").read_text()) == provenance


def test_sample_grid_is_logged_to_wandb_offline(compose_cfg, monkeypatch):
    monkeypatch.setenv("FETALGEN_WANDB_OFFLINE", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg("train_diffusion", [*TINY, "logger=wandb", "trainer.val_check_interval=100"])
    train_diffusion(cfg)
    images = list(
        (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*/files/media/images/samples/grid_*.png")
    )
    assert len(images) == 1


def test_an_unknown_sample_grid_sampler_fails_before_training(compose_cfg) -> None:
    from fetalgen.tasks.train_diffusion import train_diffusion

    cfg = compose_cfg(
        "train_diffusion", ["model=diffusion/tiny", "logger=none", "callbacks.sample_grid.sampler=euler"]
    )
    with pytest.raises(Exception, match="unknown sampler 'euler'"):
        train_diffusion(cfg)


def test_skipped_pairs_are_recorded_by_the_generator_run_too(compose_cfg, phantom_dir, tmp_path):
    import shutil

    from fetalgen.data.provenance import read_training_cases

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    broken = sorted((data / "masks").iterdir())[0]
    broken.write_bytes(b"not a png")
    cfg = compose_cfg("train_diffusion", ["model=diffusion/tiny", "data=folder", f"data.source.root={data}",
                                          "data.on_bad_pair=skip", "data.num_real=20", "data.num_val=4",
                                          "data.batch_size=4", "trainer.max_steps=1", "trainer.val_check_interval=1",
                                          "logger=none", "callbacks.sample_grid.every_n_steps=0",
                                          "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2"])  # fmt: skip
    with pytest.warns(UserWarning, match="skipped 1 bad file"):
        metrics = train_diffusion(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["data/skipped"] == 1 and broken.name in (out / "skipped.txt").read_text()
    listed = {r["name"] for r in read_training_cases(out / "training_cases.csv")}
    assert broken.stem not in listed and len(listed) == metrics["data/num_train"]


def test_the_shape_prior_travels_from_the_training_masks_to_the_set(compose_cfg, tmp_path):
    import torch

    metrics = train_diffusion(compose_cfg("train_diffusion", [*TINY, "logger=none"]))
    recorded = torch.load(metrics["checkpoint"], weights_only=True)["fetalgen_provenance"]["shape_prior"]
    assert recorded["n"] == 8 and len(recorded["mean"]) == 6  # the 8 training masks
    out = tmp_path / "conditioned"
    synthesize(compose_cfg("sample", [f"ckpt_path={metrics['checkpoint']}", "n=2", "steps=2", f"out={out}",
                                      "mode=mask_conditioned", "progress=false", "fidelity.enabled=false"]))  # fmt: skip
    assert json.loads((out / "provenance.json").read_text())["shape_prior"] == recorded
    assert json.loads((out / "summary.json").read_text())["settings"]["shape_prior"] == recorded


def test_a_fixed_reference_set_judges_and_may_not_share_images_with_the_heldout_set(
    compose_cfg, phantom_dir, tmp_path
):
    from fetalgen.data.provenance import LeakageError

    metrics = train_diffusion(compose_cfg("train_diffusion", [*TINY, "logger=none"]))
    folders = {}
    for name, picked in (("heldout", range(0, 6)), ("reference", range(6, 16))):  # links, nothing copied
        for kind in ("images", "masks"):
            (tmp_path / name / kind).mkdir(parents=True)
            for path in [sorted((phantom_dir / kind).iterdir())[i] for i in picked]:
                (tmp_path / name / kind / path.name).symlink_to(path)
        folders[name] = tmp_path / name
    args = [f"ckpt_path={metrics['checkpoint']}", "n=4", "steps=2", "progress=false", "fidelity/features=sam_tiny",
            "fidelity.segmenter_steps=5", "fidelity.kid_subsets=2",
            "+eval_data@fidelity.heldout=folder", f"fidelity.heldout.source.root={folders['heldout']}",
            "+eval_data@fidelity.reference=folder"]  # fmt: skip
    synthesize(compose_cfg("sample", [*args, f"fidelity.reference.source.root={folders['reference']}",
                                      f"out={tmp_path / 'set'}"]))  # fmt: skip
    summary = json.loads((tmp_path / "set" / "summary.json").read_text())["fidelity"]
    assert "10 fixed real pairs (folder" in summary["agreement"]["segmenter"]
    assert "generator's 8 real training pairs" in summary["agreement_own"]["segmenter"]
    with pytest.raises(LeakageError, match="fidelity.reference shares 6 image"):
        synthesize(compose_cfg("sample", [*args, f"fidelity.reference.source.root={folders['heldout']}",
                                          f"out={tmp_path / 'refused'}"]))  # fmt: skip


def test_sampling_a_mask_conditioned_generator_takes_its_mode_unasked(compose_cfg, tmp_path):
    cfg = compose_cfg("train_diffusion", [*TINY, "generator=mask_conditioned", "logger=none"])
    assert cfg.model.noise_scheduler.prediction_type == "v_prediction"  # the measured recipe is the default
    metrics = train_diffusion(cfg)
    out = tmp_path / "set"
    synthesize(compose_cfg("sample", [f"ckpt_path={metrics['checkpoint']}", "n=2", "steps=2", f"out={out}",
                                      "progress=false", "fidelity.enabled=false"]))  # fmt: skip
    assert {e.mode for e in read_manifest(out)} == {"mask_conditioned"}
    with pytest.raises(ValueError, match="mask-conditioned generator: it draws images for given masks"):
        synthesize(compose_cfg("sample", [f"ckpt_path={metrics['checkpoint']}", "n=2", "steps=2", "mode=joint",
                                          f"out={tmp_path / 'joint'}", "progress=false", "fidelity.enabled=false"]))  # fmt: skip


def test_the_mask_conditioned_generator_learns_from_unlabelled_images_too(compose_cfg, tmp_path):
    import torch

    from fetalgen.data.provenance import label_counts

    args = [*TINY, "generator=mask_conditioned", "logger=none", "data.num_real=3", "data.unlabelled=4"]
    metrics = train_diffusion(compose_cfg("train_diffusion", args))
    assert metrics["data/num_train"] == 3 and metrics["data/num_unlabelled"] == 4
    records = torch.load(metrics["checkpoint"], weights_only=True)["fetalgen_provenance"]["training_cases"]
    assert label_counts(records) == {"labelled": 3, "unlabelled": 4}
    assert all(r["mask_path"] == "" for r in records if r["labelled"] != "yes")  # the masks never named
    out = tmp_path / "set"
    synthesize(compose_cfg("sample", [f"ckpt_path={metrics['checkpoint']}", "n=3", "steps=2", f"out={out}",
                                      "progress=false", "fidelity/features=sam_tiny", "fidelity.segmenter_steps=5",
                                      "fidelity.kid_subsets=2", "memorisation.threshold=-1"]))  # fmt: skip
    # every image the generator saw, labelled or not, is a nearest-neighbour candidate: with the threshold at -1
    # every pair is "memorised", and its nearest image is named among the 7
    entries = read_manifest(out)
    seen = {r["name"] for r in records}
    assert all(e.memorised for e in entries) and {e.nearest_train for e in entries} <= seen
    assert json.loads((out / "provenance.json").read_text())["training_cases"] == records

    with pytest.raises(ValueError, match="joint generator learns masks, so it cannot train on images"):
        train_diffusion(
            compose_cfg("train_diffusion", [*TINY, "logger=none", "data.num_real=3", "data.unlabelled=4"])
        )
