"""fetalgen-pseudo-label end to end on phantom data with the tiny SAM: a teacher labels the pool, a student trains
on its kept masks, and the labels behind the student are counted apart from the unlabelled images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetalgen.data.provenance import is_labelled, read_synthetic_provenance
from fetalgen.data.synthetic import read_manifest, read_synthetic
from fetalgen.tasks.finetune import finetune
from fetalgen.tasks.pseudo_label import pseudo_label
from fetalgen.utils.masks import largest_component

DATA = ["data.source.n=24", "data.source.shape=[135,200]", "data.num_real=8", "data.num_val=4", "data.num_test=4",
        "data.image_size=64"]  # fmt: skip


@pytest.fixture
def teacher(compose_cfg, phantom_dir: Path) -> Path:
    cfg = compose_cfg("finetune", [
        "logger=none", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        f"data.source.root={phantom_dir}", *DATA, "model.sam.image_size=64", "eval.repetitions=1",
        "eval.progress=false", "eval.figure=false", "eval.more_prompt_modes=[]",
    ])  # fmt: skip
    finetune(cfg)
    return next((Path(cfg.paths.output_dir) / "checkpoints").glob("best_*.ckpt"))


def test_the_pool_is_labelled_the_kept_masks_train_a_student_and_labels_are_counted_apart(
    compose_cfg, phantom_dir: Path, teacher: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pseudo"
    common = [f"ckpt_path={teacher}", f"data.source.root={phantom_dir}", *DATA, f"out={out}", "device=cpu"]
    # The tiny teacher's IoU head is random (it predicts ~ -0.08): not consulted; its masks' shapes are judged.
    loose = ["keep.min_predicted_iou=null", "keep.min_ellipse_iou=0.6", "keep.area_range=[0.001,1.0]"]
    metrics = pseudo_label(compose_cfg("pseudo_label", [*common, *loose]))
    entries = read_manifest(out)
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["pseudo/total"] == len(entries) == summary["total"] == 24 - 8 - 4 - 4
    assert summary["kept"] + summary["rejected"] == len(entries) == metrics["pseudo/total"]
    assert (summary["labelled"], summary["unlabelled"]) == (8, len(entries))  # counted apart
    assert summary["kept"] == sum(e.qc_pass for e in entries) == metrics["pseudo/kept"]
    assert 0 < summary["kept"] < len(entries) and set(summary["reasons"]) == {"ellipse_iou"}
    for e in entries:  # each mask at its image's own size; the verdict's figures beside it
        image = cv2.imread(str(out / e.image), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(out / e.mask), cv2.IMREAD_GRAYSCALE)
        assert image.shape == mask.shape == (135, 200) and set(np.unique(mask)) <= {0, 255}
        assert (largest_component(mask > 0) == (mask > 0)).all()  # one region, as the data layer demands
        assert e.mode == "pseudo_label" and "predicted_iou" in e.qc and Path(e.source).name == e.name + ".png"
        assert e.qc_pass == (not e.qc["reasons"])
    provenance = read_synthetic_provenance(out)  # sealed: verified against the teacher's checkpoint
    labelled = [r for r in provenance["training_cases"] if is_labelled(r)]
    unlabelled = [r for r in provenance["training_cases"] if not is_labelled(r)]
    assert len(labelled) == 8 and {r["name"] for r in unlabelled} == {e.name for e in entries}
    assert {r["mask_path"] for r in unlabelled} == {""}  # no pool mask was ever named, let alone read

    # The student: the same labelled pairs + the kept pseudo-labels, at the same step budget.
    student = compose_cfg("finetune", [
        "logger=none", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        f"data.source.root={phantom_dir}", *DATA, "model.sam.image_size=64", "eval.repetitions=1",
        "eval.progress=false", "eval.figure=false", "eval.more_prompt_modes=[]", "arm=pseudo",
        f"data.synthetic_dir={out}",
    ])  # fmt: skip
    learnt = finetune(student)
    assert learnt["data/num_synthetic"] == summary["kept"] == len(read_synthetic(out)[0])
    assert (learnt["labels/sam"], learnt["labels/generator"], learnt["labels/total"]) == (8, 8, 8)
    assert learnt["unlabelled/total"] == len(entries)

    # A second labelling into the same folder is refused (nothing overwritten); a teacher of other labels too.
    with pytest.raises(FileExistsError, match="exists"):
        pseudo_label(compose_cfg("pseudo_label", common))
    other = [*common[:-2], "data.num_real=6", f"out={tmp_path / 'other'}", "device=cpu"]
    with pytest.raises(ValueError, match="fine-tuned on 8 labelled pairs other than the 6"):
        pseudo_label(compose_cfg("pseudo_label", other))
    assert not (tmp_path / "other").exists()
