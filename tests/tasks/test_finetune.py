"""fetalgen-finetune and fetalgen-evaluate through the real configs: tiny SAM, phantom pairs, a few epochs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import open_dict

from fetalgen.data.provenance import LeakageError, read_training_cases, write_synthetic_provenance
from fetalgen.data.synthetic import MANIFEST, ManifestEntry
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.tasks.evaluate import evaluate
from fetalgen.tasks.finetune import finetune
from fetalgen.utils.checkpoints import CheckpointError


def synthetic_set(root: Path, other_phantoms: Path, n: int = 4) -> Path:
    """A fetalgen-sample-like folder made of phantom pairs (none a copy of the real ones); the last failed QC."""
    phantom_dir = other_phantoms
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    lines = []
    for i, image in enumerate(sorted((phantom_dir / "images").iterdir())[-n:]):
        name = f"syn_{i:06d}"
        shutil.copy(image, root / "images" / f"{name}.png")
        shutil.copy(next((phantom_dir / "masks").glob(f"{image.stem}*")), root / "masks" / f"{name}.png")
        entry = ManifestEntry(i, name, f"images/{name}.png", f"masks/{name}.png", i, "0" * 64, "ddim", 10)
        entry.qc_pass = i < n - 1
        lines.append(entry.to_json())
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    write_synthetic_provenance(root, {"checkpoint": "", "sha256": "0" * 64, "global_step": 0}, [])
    return root


def overrides(phantom_dir: Path) -> list[str]:
    return [
        "logger=csv",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        f"data.source.root={phantom_dir}",
        "data.source.n=24",
        "data.source.shape=[135,200]",
        "data.num_real=8",
        "data.num_val=4",
        "data.num_test=4",
        "data.image_size=64",
        "model.sam.image_size=64",
        "eval.repetitions=2",
        "eval.progress=false",
    ]


@pytest.mark.slow
def test_finetune_then_evaluate_the_checkpoint(
    compose_cfg, phantom_dir: Path, other_phantoms: Path, tmp_path: Path
):
    syn = synthetic_set(tmp_path / "synthetic", other_phantoms)
    cfg = compose_cfg(
        "finetune", [*overrides(phantom_dir), f"data.synthetic_dir={syn}", "data.num_synthetic=3"]
    )
    metrics = finetune(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "metrics.json").read_text())
    assert written == pytest.approx(metrics, nan_ok=True)
    for key in ("val/dice", "val/loss", "train/loss", "test/phantom/dice", "test/phantom/dice_std",
                "test/phantom/baseline_dice", "test/phantom/hd95_mm", "test/phantom/hc_abs_err_mm"):  # fmt: skip
        assert key in metrics, key
    assert 0 <= metrics["val/dice"] <= 1 and metrics["test/phantom/n_images"] == 4
    assert (metrics["data/num_real"], metrics["data/num_synthetic"], metrics["data/synthetic_qc_failed"]) == (
        8,
        3,
        1,
    )
    assert not any(k.startswith(("test/spanish", "test/african")) for k in metrics)  # roots absent: skipped
    for name in ("per_image.csv", "summary.json", "cases.png"):
        assert (out / "eval" / "phantom" / name).is_file()
    logged = pd.read_csv(out / "csv" / "metrics.csv")
    assert {"train/loss", "val/dice", "val/iou", "val/loss"} <= set(logged.columns)
    best = next((out / "checkpoints").glob("best_*.ckpt"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert (
        checkpoint["fetalgen_config"]["model"]["sam"]["model_type"] == "tiny"
        and checkpoint["fetalgen_task"] == "finetune"
    )  # the run record, as the generator's
    assert len(checkpoint["fetalgen_provenance"]["training_cases"]) == metrics["data/num_real"]

    # The best checkpoint through fetalgen-evaluate on the same test images: the same boxes, the same numbers.
    trained = pd.read_csv(out / "eval" / "phantom" / "per_image.csv")
    names = tmp_path / "test.txt"
    names.write_text("\n".join(trained["name"].unique()) + "\n")
    ecfg = compose_cfg(
        "evaluate",
        [f"ckpt_path={best}", "eval_data=folder", f"eval_data.source.root={phantom_dir}", f"eval_data.source.list_file={names}",
         "eval_data.name=phantom", "eval.repetitions=2", "eval.progress=false", "eval.figure=false"],
    )  # fmt: skip
    with open_dict(ecfg):
        ecfg.paths.output_dir = str(tmp_path / "evaluate")
    emetrics = evaluate(ecfg)
    assert emetrics["eval/phantom/dice"] == pytest.approx(metrics["test/phantom/dice"])
    for mode in ("tight", "full", "auto"):  # the other prompt modes, the automatic one included
        assert emetrics[f"eval/phantom@{mode}/dice"] == pytest.approx(metrics[f"test/phantom@{mode}/dice"])
        assert f"test/phantom@{mode}/hc_abs_err_mm" in metrics
    again = pd.read_csv(tmp_path / "evaluate" / "phantom" / "per_image.csv")
    key = ["name", "repetition", "method"]
    a, b = trained.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a[key + ["box_x0", "box_y1", "dice", "hd95_px"]], b[key + ["box_x0", "box_y1", "dice", "hd95_px"]]
    )

    # Resume from last.ckpt for one more epoch.
    last = out / "checkpoints" / "last.ckpt"
    rcfg = compose_cfg(
        "finetune", [*overrides(phantom_dir), "trainer.max_steps=6", f"ckpt_path={last}", "test_split=false"]
    )
    first_cases = torch.load(last, weights_only=True)["fetalgen_provenance"]["training_cases"]
    resumed = finetune(rcfg)
    assert "val/dice" in resumed and not any(k.startswith("test/") for k in resumed)
    assert (
        torch.load(last, weights_only=True)["fetalgen_provenance"]["training_cases"] == first_cases
    )  # once each

    # A resume carries what the earlier weights trained on: a record naming a held-out case is TEST LEAKAGE, and
    # a checkpoint that records nothing is refused unless waived.
    contents = torch.load(last, weights_only=True)
    held = [{"name": n, "subject": n, "cohort": "phantom"} for n in trained["name"].unique()]
    contents["fetalgen_provenance"]["training_cases"] += held
    torch.save(contents, tmp_path / "leaky.ckpt")
    leaky = [*overrides(phantom_dir), "trainer.max_steps=8", f"ckpt_path={tmp_path / 'leaky.ckpt'}"]
    with pytest.raises(LeakageError, match="TEST LEAKAGE"):
        finetune(compose_cfg("finetune", leaky))
    del contents["fetalgen_provenance"]
    torch.save(contents, tmp_path / "unrecorded.ckpt")
    unrecorded = [*overrides(phantom_dir), "trainer.max_steps=8", f"ckpt_path={tmp_path / 'unrecorded.ckpt'}",
                  "test_split=false"]  # fmt: skip
    with pytest.raises(CheckpointError, match="records no training cases"):
        finetune(compose_cfg("finetune", unrecorded))
    finetune(compose_cfg("finetune", [*unrecorded, "allow_unknown_lineage=true"]))


def test_every_sam_config_composes(compose_cfg):
    for name in ("tiny", "vit_b", "vit_l", "vit_h", "medsam", "lite_medsam"):
        cfg = compose_cfg("finetune", [f"model=sam/{name}", "logger=none"])
        assert cfg.model.sam.model_type == name and cfg.model._target_.endswith("SamFinetuneModule")
        assert cfg.callbacks.model_checkpoint.monitor == "val/dice"
        assert cfg.callbacks.early_stopping is None  # it would give the arms of a comparison unequal budgets
        assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_steps > 0
        if name == "lite_medsam":  # the weights in the installed package, at its one input size
            assert cfg.model.sam.checkpoint == "pretrained" and cfg.model.sam.image_size == 256
        elif name != "tiny":
            assert cfg.model.sam.checkpoint.endswith(".pth") and cfg.model.sam.image_size == 1024
    cfg = compose_cfg("finetune", ["model.sam.image_size=64", "logger=none"])
    module = instantiate(cfg.model)
    assert isinstance(module, SamFinetuneModule) and module.cache is not None
    missing = compose_cfg("evaluate", ["model=sam/vit_b"])
    with pytest.raises(InstantiationException, match="make weights"):  # Hydra wraps the FileNotFoundError
        instantiate(missing.model)


@pytest.mark.slow
def test_evaluate_cli_on_a_folder_with_random_tiny_sam(phantom_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "fetalgen.cli.evaluate", "eval_data=folder", f"eval_data.source.root={phantom_dir}",
        "eval_data.name=ph", "eval_data.image_size=64", "model.sam.image_size=64", "eval.repetitions=2",
        "allow_random_weights=true",
        "eval.progress=false", f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **_env()}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "ph" / "summary.json").read_text())
    assert summary["n_images"] == 24 and summary["checkpoint"] == "random init (tiny)"
    assert (run_dir / "ph" / "cases.png").is_file() and (run_dir / "metrics.json").is_file()
    assert "box-ellipse" in done.stdout + done.stderr + (run_dir / "evaluate.log").read_text()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


@pytest.mark.hc18
def test_evaluate_on_real_hc18_cases(compose_cfg, hc18_dir: Path, tmp_path: Path):
    names = tmp_path / "cases.txt"
    names.write_text("001_HC\n010_2HC\n")
    cfg = compose_cfg(
        "evaluate",
        ["eval_data=hc18", f"eval_data.source.root={hc18_dir}", f"eval_data.source.list_file={names}", "eval_data.image_size=64",
         "allow_random_weights=true",
         "model.sam.image_size=64", "eval.repetitions=2", "eval.progress=false", "eval.figure=false"],
    )  # fmt: skip
    metrics = evaluate(cfg)
    rows = pd.read_csv(Path(cfg.paths.output_dir) / "hc18" / "per_image.csv")
    assert set(rows["name"]) == {"001_HC", "010_2HC"} and len(rows) == 2 * 2 * 3  # images x reps x methods
    assert rows["pixel_size_mm"].notna().all() and rows["hc_csv_mm"].notna().all()  # from the HC18 CSV
    base = rows[rows["method"] == "box_ellipse"]
    assert base["hc_abs_err_csv_mm"].notna().all() and base["dice"].min() > 0.5
    assert metrics["eval/hc18/n_images"] == 2 and not np.isnan(
        metrics["eval/hc18/baseline_hc_abs_err_csv_mm"]
    )
    # Every prompt mode, the prompt-free one (auto) included, with Dice, HD95 and the HC error in mm.
    for label in ("hc18@tight", "hc18@full", "hc18@auto"):
        assert {f"eval/{label}/dice", f"eval/{label}/hd95_mm", f"eval/{label}/hc_abs_err_csv_mm"} <= set(
            metrics
        )
    auto = pd.read_csv(Path(cfg.paths.output_dir) / "hc18@auto" / "per_image.csv")
    assert set(auto["prompt_mode"]) == {"auto"} and len(auto) == 2 * 3  # one repetition, three methods


@pytest.mark.slow
def test_finetune_with_two_ddp_processes(compose_cfg, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch):
    # gloo DDP on the CPU (trainer=ddp_cpu, spawned processes): every trainable parameter must get a gradient,
    # metrics are synchronised, and only rank 0 evaluates and writes metrics.json.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = compose_cfg("finetune", [*overrides(phantom_dir), "trainer=ddp_cpu", "data.augment=weak"])
    metrics = finetune(cfg)
    assert 0 <= metrics["val/dice"] <= 1 and "test/phantom/dice" in metrics
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["data/num_real"] == 8


def _phantom_source(phantom_dir: Path) -> list[str]:
    return [f"data.source.root={phantom_dir}", "data.source.n=24", "data.source.shape=[135,200]"]


@pytest.mark.slow
def test_leakage_through_the_generator_is_refused(compose_cfg, phantom_dir: Path, tmp_path: Path):
    from fetalgen.data.phantom import phantom_cases
    from fetalgen.data.protocol import make_split
    from fetalgen.data.provenance import LeakageError, read_training_cases
    from fetalgen.tasks.sample import synthesize
    from fetalgen.tasks.train_diffusion import train_diffusion

    split = tmp_path / "split"
    make_split(phantom_cases(phantom_dir, n=24, shape=(135, 200)), split, num_val=4, num_test=4, seed=0)
    # A real (tiny) generator on the split's pool, and two pairs sampled from it.
    dcfg = compose_cfg("train_diffusion", [
        "model=diffusion/tiny", *_phantom_source(phantom_dir), f"data.split_file={split}", "data.num_real=16",
        "data.load_holdout=false", "data.batch_size=8", "trainer.max_steps=2", "logger=none",
        "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2",
    ])  # fmt: skip
    with open_dict(dcfg):
        dcfg.paths.output_dir = str(tmp_path / "diffusion")
    ckpt = train_diffusion(dcfg)["checkpoint"]
    generator_cases = read_training_cases(tmp_path / "diffusion" / "training_cases.csv")
    assert len(generator_cases) == 16
    scfg = compose_cfg("sample", [f"ckpt_path={ckpt}", "n=2", "sampler=ddim", "steps=2", f"out={tmp_path / 'syn'}",
                                  "progress=false", "qc.min_ellipse_iou=0.0", "qc.area_range=[0.0,1.0]",
                                  "fidelity/features=sam_tiny", "fidelity.segmenter_steps=5"])  # fmt: skip
    synthesize(scfg)
    provenance = json.loads((tmp_path / "syn" / "provenance.json").read_text())
    assert [r["name"] for r in provenance["training_cases"]] == [r["name"] for r in generator_cases]

    # The same split for SAM: accepted, and the labels behind the model are counted.
    common = [*overrides(phantom_dir), f"data.synthetic_dir={tmp_path / 'syn'}", "data.synthetic_ratio=0.25"]
    ok = compose_cfg("finetune", [*common, f"data.split_file={split}"])
    metrics = finetune(ok)
    assert (metrics["labels/sam"], metrics["labels/generator"], metrics["labels/total"]) == (8, 16, 16)
    best = next((Path(ok.paths.output_dir) / "checkpoints").glob("best_*.ckpt"))

    # A split of its own (another seed): its test images were in the generator's training set -> refused
    # (raised by the data module, so it reaches the user through Hydra's instantiate).
    leaky = compose_cfg("finetune", [*common, "seed=1"])
    pattern = (
        r"TEST LEAKAGE: the generator of the synthetic set .*syn.*validation case.*test case\(s\): phantom_"
    )
    with pytest.raises(InstantiationException, match=pattern):
        finetune(leaky)

    # fetalgen-evaluate refuses the generator's training images for the fine-tuned model.
    listed = tmp_path / "seen.txt"
    listed.write_text("\n".join(r["name"] for r in generator_cases[:3]) + "\n")
    ecfg = compose_cfg("evaluate", [f"ckpt_path={best}", "eval_data=folder", f"eval_data.source.root={phantom_dir}",
                                    f"eval_data.source.list_file={listed}", "eval.progress=false"])  # fmt: skip
    with pytest.raises(LeakageError, match=generator_cases[0]["name"]):
        evaluate(ecfg)


@pytest.mark.slow
def test_arms_of_different_sizes_train_the_same_number_of_steps(
    compose_cfg, phantom_dir: Path, other_phantoms: Path, tmp_path: Path
):
    syn = synthetic_set(tmp_path / "synthetic", other_phantoms, n=8)
    budget = ["trainer.max_steps=5", "trainer.val_check_interval=5", "test_split=false", "data.batch_size=2"]
    small = finetune(compose_cfg("finetune", [*overrides(phantom_dir), *budget, "data.num_real=2"]))
    large = finetune(compose_cfg("finetune", [*overrides(phantom_dir), *budget, f"data.synthetic_dir={syn}",
                                              "data.num_synthetic=all"]))  # fmt: skip
    assert small["train/steps"] == large["train/steps"] == 5
    # 5 steps of 2: the small arm sees its 2 pairs again and again, the large one 10 of its 15 pairs once.
    assert (small["data/real_seen"], small["data/synthetic_seen"]) == (2, 0)
    assert large["data/num_real"] + large["data/num_synthetic"] == 15
    assert large["data/real_seen"] + large["data/synthetic_seen"] == 10


def test_a_budget_shorter_than_the_validation_interval_is_refused_before_training(compose_cfg):
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_steps=10", "trainer.val_check_interval=50"])
    with pytest.raises(ValueError, match="val_check_interval=50 > trainer.max_steps=10: no validation"):
        finetune(cfg)


def test_an_epoch_budget_that_ends_before_the_first_validation_is_refused_before_training(compose_cfg):
    # A Lightning habit: trainer.max_epochs=2 with the step-based validation of fine-tuning (every 50 batches).
    # The phantom pool gives a few batches an epoch: it trained, then failed on the missing val/dice.
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_epochs=2", "model.sam.image_size=64"])
    with pytest.raises(ValueError, match=r"trainer.max_epochs=2 x \d+ batches per epoch .* fewer than "
                                         r"trainer.val_check_interval=50"):  # fmt: skip
        finetune(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
    with pytest.raises(ValueError, match="limit_val_batches=0"):
        finetune(compose_cfg("finetune", ["logger=none", "+trainer.limit_val_batches=0"]))
    with pytest.raises(ValueError, match="the validation split is empty"):
        finetune(compose_cfg("finetune", ["logger=none", "model.sam.image_size=64", "data.num_val=0"]))


def test_a_split_emptied_by_skips_is_refused_before_training_and_records_hold_the_used_cases(
    compose_cfg, phantom_dir: Path, tmp_path: Path
):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    names = sorted(p.stem for p in (data / "images").iterdir())
    (data / "masks" / f"{names[0]}.png").write_bytes(b"not a png")  # the only validation pair: skipped
    (data / "masks" / f"{names[1]}.png").write_bytes(b"not a png")  # a training pair: skipped
    split = tmp_path / "split"
    split.mkdir()
    (split / "val.txt").write_text(f"{names[0]}\n")
    (split / "test.txt").write_text("")
    (split / "train.txt").write_text("".join(f"{n}\n" for n in names[1:8]))
    common = ["data=folder", f"data.source.root={data}", "data.on_bad_pair=skip", f"data.split_file={split}",
              "data.num_real=7", "data.image_size=32", "model.sam.image_size=64", "logger=none", "test_split=false",
              "trainer.max_steps=2", "trainer.val_check_interval=1"]  # fmt: skip
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="the validation split is empty"):
        finetune(compose_cfg("finetune", common))
    (split / "val.txt").write_text(f"{names[9]}\n")
    cfg = compose_cfg("finetune", common)
    with pytest.warns(UserWarning):
        metrics = finetune(cfg)
    listed = read_training_cases(Path(cfg.paths.output_dir) / "training_cases.csv")
    assert [r["name"] for r in listed] == names[2:8] and metrics[
        "data/num_real"
    ] == 6  # the skipped one left out


def test_a_held_out_image_put_into_a_synthetic_set_is_found(
    compose_cfg, phantom_dir: Path, other_phantoms: Path, tmp_path: Path
):
    syn = synthetic_set(tmp_path / "synthetic", other_phantoms)
    cfg = compose_cfg(
        "finetune", [*overrides(phantom_dir), f"data.synthetic_dir={syn}", "data.num_synthetic=3"]
    )
    from fetalgen.data.datamodule import PairDataModule

    test_case = instantiate(cfg.data).test_cases[0]
    shutil.copy(test_case.image_path, syn / "images" / "syn_000001.png")  # a held-out image, renamed
    shutil.copy(test_case.mask_path, syn / "masks" / "syn_000001.png")
    write_synthetic_provenance(syn, {"checkpoint": "", "sha256": "0" * 64, "global_step": 0}, [])
    assert isinstance(instantiate(cfg.data), PairDataModule)  # the set itself is consistent
    with pytest.raises(
        LeakageError, match=f"{test_case.name} \\(its image is syn_000001's: the same pixels\\)"
    ):
        finetune(cfg)


def test_settings_that_would_fail_after_training_fail_before_it(compose_cfg, tmp_path: Path):
    cfg = compose_cfg("finetune", ["logger=none", "eval.prompt_mode=boxes"])
    with pytest.raises(ValueError, match="eval prompt mode 'boxes' is unknown"):
        finetune(cfg)
    blocked = tmp_path / "a_file"  # a folder below a file cannot be made, whoever runs the test (root too)
    blocked.write_text("")
    cfg = compose_cfg("finetune", ["logger=none", f"callbacks.model_checkpoint.dirpath={blocked}/ckpt"])
    with pytest.raises(PermissionError, match="KeepBestOnResume cannot write to .*a_file/ckpt"):
        finetune(cfg)


@pytest.mark.slow
def test_skipped_pairs_are_counted_and_listed(compose_cfg, phantom_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    masks = sorted((data / "masks").iterdir())
    masks[0].unlink()  # an image without mask: the reader skips it
    masks[1].write_bytes(b"not a png")  # a corrupt mask: the dataset skips it
    cfg = compose_cfg("finetune", [
        "data=folder", f"data.source.root={data}", "data.on_bad_pair=skip", "data.num_real=21", "data.num_val=2",
        "data.num_test=0", "data.image_size=32", "model.sam.image_size=64", "trainer.max_steps=2",
        "trainer.val_check_interval=1", "logger=none", "test_split=false",
    ])  # fmt: skip
    with pytest.warns(UserWarning, match="skipped 1 bad file"):
        metrics = finetune(cfg)
    assert metrics["data/skipped"] == 2
    assert metrics["data/num_real"] + metrics["data/num_val"] == 24 - 2  # the pairs actually used
    listed = (Path(cfg.paths.output_dir) / "skipped.txt").read_text().splitlines()
    assert len(listed) == 2 and any(masks[1].name in line for line in listed)
    ecfg = compose_cfg("evaluate", ["eval_data=folder", f"eval_data.source.root={data}", "eval_data.on_bad_pair=skip",
                                    "allow_random_weights=true",
                                    "eval.repetitions=1", "eval.progress=false", "eval.figure=false"])  # fmt: skip
    with pytest.warns(UserWarning):
        emetrics = evaluate(ecfg)
    assert emetrics["eval/folder/n_skipped"] == 2 and emetrics["eval/folder/n_images"] == 22
