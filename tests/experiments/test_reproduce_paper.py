"""``make reproduce-paper``: every step on real HC18 data, shrunk (preset smoke); missing data stops early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fetalgen.data.hc18 import parse_name
from fetalgen.data.provenance import read_training_cases
from fetalgen.data.splits import read_case_list

SCRIPT = Path(__file__).parents[2] / "experiments" / "reproduce_paper.py"


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, **env},
    )  # fmt: skip


def test_missing_hc18_stops_early_with_the_fix(tmp_path: Path) -> None:
    done = _run(tmp_path, {"FETALGEN_HC18_DIR": str(tmp_path / "nowhere")}, "--preset", "smoke")
    assert done.returncode != 0
    assert "HC18 not found" in done.stderr and "make data" in done.stderr
    assert not (tmp_path / "outputs").exists()  # nothing started


@pytest.mark.slow(minutes=7)
@pytest.mark.hc18
def test_smoke_reproduction_on_real_hc18(hc18_dir: Path, tmp_path: Path) -> None:
    env = {
        "FETALGEN_HC18_DIR": str(hc18_dir),
        "FETALGEN_SPANISH_DIR": str(tmp_path / "absent"),
        "FETALGEN_AFRICAN_DIR": str(tmp_path / "absent"),
    }
    results = tmp_path / "results"
    done = _run(tmp_path, env, "--preset", "smoke", "--out", str(tmp_path / "out"), "--results", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Spanish cohort ABSENT" in done.stdout and "Training on HC18 alone" in done.stdout
    assert (
        "Some runs failed" not in done.stdout
    )  # the zero-shot sweep failed after writing its metrics, unnoticed
    table = pd.read_csv(results / "table.csv")
    assert sorted(table["arm"]) == [
        "matched[conditioned]", "pseudo", "real", "reference", "synthetic[conditioned]",
        "synthetic_pseudo[conditioned]", "zero_shot",
    ]  # fmt: skip
    assert set(table["train cohort"]) == {"hc18"} and set(table["N_real"]) == {3, 9}  # zero-shot ran at 3
    text = (results / "results.md").read_text()
    assert "| spanish | 94.66 | – | test set absent |" in text
    assert (
        "Δ vs real-only [95% CI]" in text and "| hc18 | – | box-ellipse |" in text and "## Data notes" in text
    )
    paired = pd.read_csv(results / "paired_hc18.csv").set_index("arm")
    assert (paired.loc["synthetic[conditioned]", ["sam", "generator"]] == [3, 9]).all()
    assert (paired.loc["matched[conditioned]", ["sam", "generator", "total"]] == [3, 3, 3]).all()
    assert paired["label_equivalence"].notna().all() and "worth real labels" in text
    assert (paired.loc["zero_shot", ["sam", "generator", "total", "train/steps"]] == 0).all()
    assert paired.loc["zero_shot", "N_real"] == 0 and "Δ vs zero-shot [95% CI]" in text
    assert paired["diff_zero_shot"].drop(["zero_shot", "box-ellipse"]).notna().all()  # the reference (9) too
    assert paired.loc["reference", "sam"] == 9 and paired.loc["real", "generator"] == 0
    # self-training: the real arm's model labelled 6 pool images; its labels are the student's own 3
    assert (paired.loc["pseudo", ["sam", "generator", "total", "unlabelled"]] == [3, 3, 3, 6]).all()
    both = paired.loc["synthetic_pseudo[conditioned]"]
    assert both["sam"] == 3 and both["unlabelled"] == 6 and 9 <= both["total"] <= 12
    assert paired.loc["real", "unlabelled"] == 0 and "| unlabelled images | worth real labels |" in text
    pseudo = json.loads((tmp_path / "out" / "pseudo" / "n3_seed0" / "summary.json").read_text())
    assert pseudo["total"] == 6 and pseudo["labelled"] == 3 and pseudo["kept"] + pseudo["rejected"] == 6
    assert (results / "dice_vs_nreal.png").stat().st_size > 1000
    manifest = (tmp_path / "out" / "synthetic" / "conditioned" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 6
    # Each generator's set is described with its fidelity figures; the held-out reference is the validation split.
    assert "## The paper arm's synthetic pairs" in text and "## Label-matched generator" in text
    summary = json.loads((tmp_path / "out" / "synthetic" / "conditioned" / "summary.json").read_text())
    assert summary["fidelity"]["agreement"]["ceiling_source"] == "held-out real pairs"
    assert summary["fidelity"]["agreement"]["n_ceiling"] == 4  # num_val=4
    # every generator is measured by the segmenter of the paper generator's 9 pairs; QC by its own pairs
    matched = json.loads(next((tmp_path / "out" / "synthetic-matched").rglob("summary.json")).read_text())
    assert "9 fixed real pairs" in matched["fidelity"]["agreement"]["segmenter"]
    assert "generator's 3 real training pairs" in matched["fidelity"]["agreement_own"]["segmenter"]
    _assert_no_overlap(tmp_path / "out")
    # A re-run into the same folder (after a crash) redoes nothing finished: every step's outputs verify.
    again = _run(
        tmp_path, env, "--preset", "smoke", "--out", str(tmp_path / "out"), "--results", str(results)
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    steps = again.stdout.count("==> ") - again.stdout.count("==> 5/5")
    assert steps > 5 and again.stdout.count("done before (its outputs verify): skipped") == steps
    assert pd.read_csv(results / "table.csv").equals(table)


def _assert_no_overlap(out: Path) -> None:
    """From the files alone: no generator and no SAM run trained on a validation or test image or subject."""
    split = out / "split" / "hc18"
    held = {n for part in ("val", "test") for n in read_case_list(split / f"{part}.txt")}
    assert len(held) == 4 + 6
    held_subjects = {parse_name(n)[0] for n in held}
    trained = list(out.glob("diffusion*/**/training_cases.csv")) + list(
        out.glob("sweep/**/training_cases.csv")
    )
    assert len(trained) == 2 + 6  # two generators; SAM: real, synthetic, matched, reference, pseudo, both
    for path in trained:
        rows = read_training_cases(path)
        assert rows and not {r["name"] for r in rows} & held, path
        assert not {r["subject"] for r in rows} & held_subjects, path
    for syn in [
        out / "synthetic" / "conditioned",
        *(out / "synthetic-matched" / "conditioned").iterdir(),
        out / "pseudo" / "n3_seed0",
    ]:  # the pseudo-labelled set: its labelled and unlabelled images
        provenance = json.loads((syn / "provenance.json").read_text())
        assert not {r["name"] for r in provenance["training_cases"]} & held
    matched_sam = read_training_cases(
        next((out / "sweep" / "hc18" / "matched-conditioned").glob("*/training_cases.csv"))
    )
    matched_gen = read_training_cases(
        out / "diffusion-matched" / "conditioned" / "n3_seed0" / "training_cases.csv"
    )
    assert [r["name"] for r in matched_sam] == [r["name"] for r in matched_gen]  # the same labels


@pytest.mark.slow(minutes=7)
@pytest.mark.hc18
def test_the_paper_preset_rehearsed_step_by_step_on_a_cpu(hc18_dir: Path, tmp_path: Path) -> None:
    # PRESET=paper's configs (the paper's lists, the 256 px UNet, SAM ViT-B at 1024 px with the cache), random
    # weights, 1-2 optimizer steps on 2-4 images: a shape, dtype or memory error shows here, not on a GPU.
    env = {"FETALGEN_HC18_DIR": str(hc18_dir), "FETALGEN_SPANISH_DIR": str(tmp_path / "absent"),
           "FETALGEN_AFRICAN_DIR": str(tmp_path / "absent")}  # fmt: skip
    out = tmp_path / "out"
    done = _run(
        tmp_path,
        env,
        "--preset",
        "paper-rehearsal",
        "--out",
        str(out),
        "--results",
        str(tmp_path / "r"),
        "--finetune-overrides",
        "tags=[rehearsed]",  # passed through to every fine-tuning job
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pool = read_case_list(out / "split" / "hc18" / "train.txt")
    paper = read_case_list(
        Path(__file__).parents[2] / "fetalgen" / "data" / "lists" / "paper" / "HC18_data_500.list"
    )
    assert set(pool) <= set(paper)  # the paper's pool list
    generator = json.loads((out / "diffusion" / "conditioned" / "metrics.json").read_text())
    assert generator["global_step"] == 1 and generator["data/num_train"] == 3
    (run,) = (out / "sweep").rglob("metrics.json")
    metrics = json.loads(run.read_text())
    assert metrics["train/steps"] == 2 and 0 <= metrics["test/hc18/dice"] <= 1
    assert metrics["data/num_real"] == metrics["data/num_synthetic"] == 1  # one batch of 2
    config = (run.parent / ".hydra" / "config.yaml").read_text()
    assert "model_type: vit_b" in config and "image_size: 1024" in config and "image_size: 256" in config
    assert "- rehearsed" in config
    assert next((out / "export").glob("sam_vit_b.pth")).stat().st_size > 100e6  # ViT-B
    rows = pd.read_csv(out / "predict" / "measurements.csv")
    assert len(rows) == 1 and (rows["prompt"] == "auto").all()  # the one test image


def test_each_label_matched_recipe_gets_its_generators_settings_and_sweep(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import reproduce_paper

    recipes = ["conditioned128", "conditioned128-pool"]
    args = reproduce_paper.parse_args(
        ["--preset", "cpu", "--num-real", "5", "--matched-generators", ",".join(recipes)]
    )
    run = reproduce_paper.Reproduction(args, reproduce_paper.PRESETS["cpu"], tmp_path, found=None, cohorts=["hc18"],
                                       common=[], splits={"hc18": tmp_path / "split"}, num_real=[5])  # fmt: skip
    assert run.matched_variants == recipes and run.variants == [
        "conditioned"
    ]  # the paper arm's stays the preset's
    sweeps = dict(run.sweeps(tmp_path / "reference", [], [5]))
    for recipe in recipes:
        overrides = sweeps[f"hc18/matched-{recipe}"]
        assert f"generator_recipe={recipe}" in overrides
        assert any(
            o.startswith("data.synthetic_dir=") and f"synthetic-matched/{recipe}/n" in o for o in overrides
        )
        variant = reproduce_paper.GENERATORS[recipe]
        cfg = compose_cfg("train_diffusion", [f"experiment={variant.experiment}", *variant.diffusion,
                                              *variant.matched, "data.num_real=5"])  # fmt: skip
        assert cfg.model.image_size == cfg.data.image_size == 128 and cfg.trainer.max_steps == 600
        assert cfg.data.batch_size == 5  # every step all five pairs (and, with the pool, five images)
        assert cfg.data.unlabelled == ("all" if recipe.endswith("-pool") else None)
    with pytest.raises(SystemExit, match="unknown generator"):
        reproduce_paper.chosen_matched_generators(
            reproduce_paper.parse_args(["--matched-generators", "nope"]), reproduce_paper.PRESETS["cpu"]
        )
