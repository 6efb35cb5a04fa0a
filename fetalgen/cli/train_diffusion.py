"""``fetalgen-train-diffusion``: train the joint image-and-mask diffusion model (conf/train_diffusion.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, metric_value, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train_diffusion")
def main(cfg: DictConfig) -> float | None:
    from fetalgen.tasks.train_diffusion import train_diffusion  # here: --help stays quick (no torch)

    metrics = run(train_diffusion, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
