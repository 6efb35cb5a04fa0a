"""Synthetic dataset writer: layout, manifest, determinism, resumption after interruptions, QC and memorisation."""

import json
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import fetalgen.synthesis.writer as synth
import fetalgen.utils.files as files
from fetalgen.cli import CONFIG_DIR
from fetalgen.data.cases import DataError
from fetalgen.data.synthetic import MANIFEST, read_manifest, read_synthetic
from fetalgen.diffusion.sampling import head_mask
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.metrics.synthesis import best_mask_iou
from fetalgen.synthesis.writer import (
    LoadedGenerator,
    PairChecks,
    SynthesisSpec,
    TrainReference,
    blocks,
    summarise_dataset,
    write_synthetic,
)
from fetalgen.utils.seeds import derive_seed

SHA = "0" * 64


def tiny_generator(overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_diffusion", overrides=["model=diffusion/tiny", *overrides])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    unet = hydra.utils.instantiate(cfg.model.unet).eval().requires_grad_(False)
    return unet, dict(hydra.utils.instantiate(cfg.model.noise_scheduler).config)


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


SPEC = SynthesisSpec(sampler="ddim", steps=4, seed=3, batch_size=4)


def run(generator, out, n, spec=SPEC, num_classes=0, **checks):
    """Write the set, then summarise it (what fetalgen-sample does, without the judge)."""
    unet, scheduler_config = generator
    checked = PairChecks(**checks)
    settings = write_synthetic(out, n, LoadedGenerator(unet, scheduler_config, SHA, num_classes), spec, checked,
                               progress=False)  # fmt: skip
    reference = checked.reference or TrainReference.empty(int(unet.config.sample_size))
    return summarise_dataset(Path(out), reference, checked.similarity_threshold, settings)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a dataset except summary.json (it records nothing run-specific, but is rewritten)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "summary.json"
    }


@pytest.fixture(scope="module")
def reference_run(generator, tmp_path_factory) -> Path:
    """An uninterrupted run of 6 pairs."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run(generator, out, 6)
    return out


def test_writes_n_pairs_and_n_manifest_lines(reference_run):
    root = reference_run
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"syn_{i:06d}.png" for i in range(6)]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [f"syn_{i:06d}.png" for i in range(6)]
    lines = (root / MANIFEST).read_text().splitlines()
    assert len(lines) == 6
    entries = read_manifest(root)
    assert [e.index for e in entries] == list(range(6))
    for e in entries:
        assert e.seed == derive_seed(3, e.index) and e.checkpoint_sha256 == SHA
        assert (e.sampler, e.steps, e.mode, e.class_label, e.guidance_scale) == (
            "ddim",
            4,
            "joint",
            None,
            1.0,
        )
        assert set(e.qc) == {"passed", "ellipse_iou", "area_frac", "centroid", "reasons"}
        assert e.qc_pass == e.qc["passed"]
        image = cv2.imread(str(root / e.image), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / e.mask), cv2.IMREAD_UNCHANGED)
        assert image.shape == mask.shape == (32, 32) and image.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
    summary = json.loads((root / "summary.json").read_text())
    assert summary["n"] == 6 and summary["settings"]["sampler"] == "ddim"
    cases, counts = read_synthetic(root, include_failed=True)
    assert len(cases) == 6 and counts["total"] == 6


def test_blocks_are_aligned_to_the_batch_size():
    assert list(blocks([0, 1, 2], 4)) == [[0, 1, 2, 3]]
    assert list(blocks([3, 4, 5], 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(blocks([], 4)) == []


def test_resume_from_a_shorter_run_matches_an_uninterrupted_run(generator, reference_run, tmp_path):
    run(generator, tmp_path, 3)
    assert len(read_manifest(tmp_path)) == 3
    run(generator, tmp_path, 6)
    assert snapshot(tmp_path) == snapshot(reference_run)
    run(generator, tmp_path, 6)  # nothing left to do: no duplicate lines
    assert snapshot(tmp_path) == snapshot(reference_run)


def test_run_killed_between_images_and_manifest_line_resumes_cleanly(
    generator, reference_run, tmp_path, monkeypatch
):
    real_append = synth.append_line
    calls = []

    def append_then_die(path, line):
        if len(calls) == 4:  # pair 4: its image and mask are on disk, its manifest line never comes
            raise KeyboardInterrupt("killed")
        calls.append(line)
        real_append(path, line)

    monkeypatch.setattr(synth, "append_line", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(generator, tmp_path, 6)
    assert (tmp_path / "images" / "syn_000004.png").is_file()
    assert len(read_manifest(tmp_path)) == 4
    # Also leave debris a hard kill can leave: an orphan mask changed on disk, a temp file, a cut-off line.
    (tmp_path / "masks" / "syn_000004.png").write_bytes(b"garbage")
    (tmp_path / "images" / ".syn_000005.png.tmp1234.png").write_bytes(b"partial")
    with open(tmp_path / MANIFEST, "a") as f:
        f.write('{"index": 4, "na')
    monkeypatch.setattr(synth, "append_line", real_append)
    run(generator, tmp_path, 6)
    assert snapshot(tmp_path) == snapshot(reference_run)


def test_resume_with_other_settings_is_refused(generator, reference_run, tmp_path):
    run(generator, tmp_path, 2)
    with pytest.raises(DataError, match="steps"):
        run(generator, tmp_path, 4, spec=SynthesisSpec(sampler="ddim", steps=5, seed=3, batch_size=4))
    with pytest.raises(DataError, match="checkpoint_sha256"):
        write_synthetic(tmp_path, 4, LoadedGenerator(*generator, "1" * 64), SPEC, progress=False)
    with pytest.raises(DataError, match="another base seed than seed=4"):
        run(generator, tmp_path, 4, spec=SynthesisSpec(sampler="ddim", steps=4, seed=4, batch_size=4))


def test_batch_size_does_not_change_the_pairs_beyond_rounding(generator, reference_run, tmp_path):
    run(generator, tmp_path, 6, spec=SynthesisSpec(sampler="ddim", steps=4, seed=3, batch_size=1))
    for i in range(6):
        a = cv2.imread(str(tmp_path / "images" / f"syn_{i:06d}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(reference_run / "images" / f"syn_{i:06d}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(a - b).max() <= 1


def test_mask_conditioned_mode_writes_masks_drawn_from_the_shape_prior(generator, tmp_path):
    training = [head_mask(32, a, 0.8, (0.5, 0.5), 10.0) for a in (0.25, 0.27, 0.3)]
    prior = ShapePrior.fit(training).to_dict()
    spec = SynthesisSpec(
        sampler="dpmsolver++", steps=4, seed=1, mode="mask_conditioned", batch_size=4, shape_prior=prior
    )
    summary = run(generator, tmp_path, 3, spec=spec)
    for e in read_manifest(tmp_path):
        assert e.mode == "mask_conditioned"
        mask = cv2.imread(str(tmp_path / e.mask), cv2.IMREAD_UNCHANGED) > 0
        assert np.array_equal(mask, spec.mask_of(e.index, 32))
        assert e.qc_pass and e.qc["ellipse_iou"] > 0.9
    assert summary["qc_pass_rate"] == 1.0 and summary["settings"]["shape_prior"] == prior
    masks = np.stack(
        training
    )  # the best IoU of each mask with a training mask: recorded per pair and per set
    reference = TrainReference(np.zeros((3, 32, 32), np.float32), np.full(3, np.nan), masks=masks)
    summary = run(generator, tmp_path / "judged", 3, spec=spec, reference=reference)
    entries = sorted(read_manifest(tmp_path / "judged"), key=lambda e: e.index)
    ious = [best_mask_iou(spec.mask_of(e.index, 32)[None], masks)[0] for e in entries]
    assert [e.max_train_mask_iou for e in entries] == pytest.approx(ious)
    assert summary["mask_copies"]["median_best_iou"] == pytest.approx(np.median(ious))
    with pytest.raises(ValueError, match="mask_conditioned mode draws its masks from a shape prior"):
        SynthesisSpec(mode="mask_conditioned")


def test_class_labels_balanced_over_the_classes(tmp_path):
    generator = tiny_generator(["model.unet.num_class_embeds=4"])
    spec = SynthesisSpec(
        sampler="ddim", steps=2, seed=0, batch_size=4, class_label="balanced", guidance_scale=2.0
    )
    run(generator, tmp_path / "balanced", 5, spec=spec, num_classes=3)
    assert [e.class_label for e in read_manifest(tmp_path / "balanced")] == [0, 1, 2, 0, 1]
    fixed = SynthesisSpec(sampler="ddim", steps=2, seed=0, batch_size=4, class_label=2)
    run(generator, tmp_path / "fixed", 2, spec=fixed, num_classes=3)
    assert [e.class_label for e in read_manifest(tmp_path / "fixed")] == [2, 2]
    with pytest.raises(ValueError, match="unconditional"):
        fixed.label_of(0, num_classes=0)
    assert SynthesisSpec(class_label="balanced").label_of(4, num_classes=0) is None
    with pytest.raises(ValueError, match="class_label"):
        SynthesisSpec(class_label="uniform")


def test_memorised_pairs_are_flagged(generator, reference_run, tmp_path):
    copied = cv2.imread(str(reference_run / "images" / "syn_000001.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    other = np.random.default_rng(0).random((32, 32))
    ref = TrainReference(np.stack([copied, other]).astype(np.float32), np.array([60.0, 70.0]), 0.5)
    summary = run(generator, tmp_path, 3, reference=ref, similarity_threshold=0.95)
    entries = read_manifest(tmp_path)
    assert entries[1].memorised and entries[1].max_train_similarity > 0.99
    assert not entries[0].memorised and entries[0].max_train_similarity < 0.95
    assert all(e.pixel_size_mm == 0.5 for e in entries)
    assert summary["memorisation"]["count"] == 1
    assert summary["head_size_px"]["train"]["n"] == 2


def test_pairs_left_broken_by_a_full_disk_are_sampled_again(generator, reference_run, tmp_path):
    run(generator, tmp_path, 4)
    (tmp_path / "images" / "syn_000001.png").write_bytes(b"")  # what a full disk leaves
    data = (tmp_path / "masks" / "syn_000002.png").read_bytes()
    (tmp_path / "masks" / "syn_000002.png").write_bytes(data[: len(data) // 3])
    run(generator, tmp_path, 6)  # resumes: repairs 1 and 2, adds 4 and 5
    ours, ref = snapshot(tmp_path), snapshot(reference_run)
    lines = {k: sorted(d.pop("manifest.jsonl").splitlines()) for k, d in (("ours", ours), ("ref", ref))}
    assert (
        ours == ref and lines["ours"] == lines["ref"]
    )  # the same pairs, bit for bit (lines in another order)


def test_a_png_that_cannot_be_written_whole_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(
        files.cv2, "imwrite", lambda path, data, params=(): Path(path).write_bytes(b"\x89PNG") is not None
    )
    with pytest.raises(OSError, match="could not write .*x.png whole"):
        files.write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    assert not (tmp_path / "x.png").exists()


def test_the_sets_folder_must_be_named_so_that_a_rerun_resumes_it():
    from omegaconf.errors import MissingMandatoryValue

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=["ckpt_path=x.ckpt"])
    GlobalHydra.instance().clear()
    with pytest.raises(MissingMandatoryValue, match="out"):
        _ = cfg.out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("guidance_scale=nan", "guidance_scale=nan is outside"),
        ("mask_threshold=nan", "mask_threshold=nan is outside"),
        ("fidelity.min_agreement=1.5", "fidelity.min_agreement=1.5 is outside"),
        ("memorisation.threshold=2", "memorisation.threshold=2 is outside"),
        ("qc.area_range=[0.7,0.01]", "qc.area_range\\[1\\]=0.01 is outside \\(0.7, 1.0\\]"),
        ("n=0", "n=0: the number of pairs to sample must be a whole number >= 1"),
        ("steps=0", "steps=0: sampler steps"),
    ],
)
def test_sampling_settings_out_of_range_are_refused_before_loading(compose_cfg, tmp_path, override, message):
    from fetalgen.tasks.sample import synthesize

    cfg = compose_cfg(
        "sample", [f"ckpt_path={tmp_path / 'nowhere.ckpt'}", f"out={tmp_path / 'syn'}", override]
    )
    with pytest.raises(ValueError, match=message):  # before the (missing) checkpoint is read
        synthesize(cfg)
    assert not (tmp_path / "syn").exists()
