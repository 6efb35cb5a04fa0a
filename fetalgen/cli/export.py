"""``fetalgen-export``: a fine-tuned SAM as a ``segment-anything`` state dict, a generator as a diffusers folder.

Examples::

    fetalgen-export ckpt_path=logs/finetune/runs/<run>/checkpoints/best_step_000900.ckpt out=exports/sam
    fetalgen-export ckpt_path=logs/train_diffusion/runs/<run>/checkpoints/last.ckpt out=exports/generator
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    from fetalgen.tasks.export import export

    run(export, cfg)


if __name__ == "__main__":
    main()
