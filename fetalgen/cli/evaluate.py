"""``fetalgen-evaluate``: score a fine-tuned SAM (or raw SAM/MedSAM weights) beside the box-ellipse baseline.

Examples::

    fetalgen-evaluate ckpt_path=logs/finetune/runs/<run>/checkpoints/best.ckpt eval_data=folder \\
        eval_data.source.root=/data/spanish eval_data.name=spanish
    fetalgen-evaluate model=sam/vit_b eval_data=hc18 eval_data.source.list_file=splits/test.txt
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, metric_value, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from fetalgen.tasks.evaluate import evaluate

    metrics = run(evaluate, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
