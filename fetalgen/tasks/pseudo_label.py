"""The ``fetalgen-pseudo-label`` task: a fine-tuned SAM (the teacher) labels the unlabelled pool of its own split;
every mask is written, the kept ones marked, and the set sealed as a synthetic set is, so that the data layer reads
it (``data.synthetic_dir``) with the same checks: its provenance lists the teacher's labelled pairs *and* the
unlabelled images, and both are held to the leakage guard of every model trained on the set.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from fetalgen.data.provenance import (
    Record,
    case_records,
    label_counts,
    labelled_names,
    write_synthetic_provenance,
)
from fetalgen.data.synthetic import MANIFEST, ManifestEntry
from fetalgen.pseudo.label import PseudoLabel, pseudo_labels
from fetalgen.pseudo.rule import KeepRule
from fetalgen.segmentation.predictor import SamBoxPredictor, load_finetuned
from fetalgen.tasks.common import output_dir, task_wrapper
from fetalgen.utils.device import resolve_device
from fetalgen.utils.files import sha256_file, write_json, write_png

log = logging.getLogger(__name__)

SUMMARY = "summary.json"


def teacher_records(provenance: dict[str, Any] | None, chosen: Iterable[str], ckpt: Path) -> list[Record]:
    """What the teacher saw (its labelled pairs, and its synthetic pairs' generator's), checked against the
    labelled pairs the data config chooses: a student must count the labels behind its teacher."""
    if not provenance or not provenance.get("training_cases"):
        raise ValueError(f"{ckpt} lists no training cases (older fetalgen): its labels cannot be counted")
    seen = list(provenance["training_cases"]) + list(provenance.get("generator_cases") or [])
    real = labelled_names(provenance["training_cases"])
    if real != set(chosen):
        raise ValueError(
            f"{ckpt} was fine-tuned on {len(real)} labelled pairs other than the {len(set(chosen))} the data config "
            "chooses: give the teacher's data.split_file, data.num_real and seed"
        )
    return seen


def write_pseudo_set(
    root: Path, labels: Iterable[PseudoLabel], teacher: dict[str, Any], records: list[Record], rule: KeepRule
) -> dict[str, Any]:
    """Write every pseudo-label (``qc_pass``: kept by ``rule``) into ``root`` as a synthetic set, sealed last."""
    if root.exists():
        raise FileExistsError(f"{root} exists: give a new out= folder (or delete it to label again)")
    tmp = root.with_name(f".{root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    entries, reasons = [], {}
    for index, label in enumerate(labels):
        name = label.case.name
        write_png(tmp / "images" / f"{name}.png", label.image)
        write_png(tmp / "masks" / f"{name}.png", label.mask.astype("uint8") * 255)
        for reason in label.verdict.reasons:
            kind = reason.split(":")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        entries.append(ManifestEntry(
            index=index, name=name, image=f"images/{name}.png", mask=f"masks/{name}.png", seed=0,
            checkpoint_sha256=teacher["sha256"], sampler="auto_prompt", steps=teacher["auto_rounds"],
            mode="pseudo_label", qc_pass=label.verdict.passed,
            qc=label.verdict.to_dict() | {"predicted_iou": label.predicted_iou},
            pixel_size_mm=label.case.pixel_size_mm, source=str(label.case.image_path),
        ))  # fmt: skip
    (tmp / MANIFEST).write_text("".join(e.to_json() + "\n" for e in entries))
    kept = sum(e.qc_pass for e in entries)
    summary = {"total": len(entries), "kept": kept, "rejected": len(entries) - kept, "reasons": reasons,
               "rule": asdict(rule), "teacher": teacher,
               **label_counts(records)}  # fmt: skip
    write_json(tmp / SUMMARY, summary)
    write_synthetic_provenance(tmp, teacher, records)
    tmp.rename(root)
    return summary


@task_wrapper
def pseudo_label(cfg: DictConfig) -> dict[str, float]:
    """Label ``cfg.data``'s unlabelled images with the teacher ``cfg.ckpt_path``; the set goes to ``cfg.out``."""
    ckpt = Path(cfg.ckpt_path)
    module, train_cfg, provenance = load_finetuned(ckpt)
    datamodule = hydra.utils.instantiate(cfg.data)
    records = teacher_records(provenance, [c.name for c in datamodule.train_cases], ckpt)
    if not datamodule.unlabelled_cases:
        raise ValueError("no unlabelled images: set data.unlabelled (a number or all)")
    rule: KeepRule = hydra.utils.instantiate(cfg.keep)
    size = int(train_cfg["data"]["image_size"])  # the teacher's working size, whatever cfg.data says
    cache = hydra.utils.instantiate(cfg.cache) if cfg.get("cache") else None
    predictor = SamBoxPredictor(module, resolve_device(cfg.get("device")), cache=cache)
    teacher = {"checkpoint": str(ckpt.resolve()), "sha256": sha256_file(ckpt), "task": "finetune",
               "kind": "pseudo_label", "auto_rounds": int(cfg.auto_rounds)}  # fmt: skip
    cases = datamodule.unlabelled_cases
    labels = pseudo_labels(predictor, cases, rule, size, cfg.batch_size, cfg.auto_rounds, cfg.get("progress"))
    records = records + case_records(cases, labelled=False)
    summary = write_pseudo_set(Path(cfg.out), labels, teacher, records, rule)
    log.info("pseudo-labelled %d images with %s: %d kept (%s); set: %s", summary["total"], ckpt, summary["kept"],
             summary["reasons"] or "none rejected", cfg.out)  # fmt: skip
    metrics = {"pseudo/total": float(summary["total"]), "pseudo/kept": float(summary["kept"]),
               "labels/teacher": float(summary["labelled"])}  # fmt: skip
    write_json(output_dir(cfg) / "metrics.json", metrics)
    return metrics
