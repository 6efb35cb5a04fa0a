"""``fetalgen-predict``: masks, overlays and head biometry (HC18 submission included) for unlabelled images.

Examples::

    fetalgen-predict ckpt_path=logs/finetune/runs/<run>/checkpoints/best_step_000900.ckpt \\
        images.root=data/hc18/test_set
    fetalgen-predict model=sam/medsam images.root=scans/ images.boxes=boxes.csv images.pixel_sizes=sizes.csv
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    from fetalgen.tasks.predict import predict

    run(predict, cfg)


if __name__ == "__main__":
    main()
