"""``fetalgen-sample``: write a synthetic dataset with QC from a diffusion checkpoint (conf/sample.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, metric_value, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> float | None:
    from fetalgen.tasks.sample import synthesize  # here: --help stays quick (no torch)

    metrics = run(synthesize, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
