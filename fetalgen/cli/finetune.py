"""``fetalgen-finetune``: fine-tune SAM on real (+ synthetic) pairs, then evaluate on the test sets.

Example: ``fetalgen-finetune data=hc18 data.num_real=20 data.synthetic_dir=<dir> data.synthetic_ratio=1
model=sam/vit_b trainer=gpu``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, metric_value, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="finetune")
def main(cfg: DictConfig) -> float | None:
    from fetalgen.tasks.finetune import finetune

    metrics = run(finetune, cfg)
    # A run that trains nothing (arm=zero_shot) has no validation metric for a sweeper to optimise.
    return metric_value(metrics, cfg.get("optimized_metric") if cfg.get("train", True) else None)


if __name__ == "__main__":
    main()
