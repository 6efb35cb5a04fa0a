"""``fetalgen-pseudo-label``: a fine-tuned SAM labels the unlabelled pool of its split (conf/pseudo_label.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR, metric_value, run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pseudo_label")
def main(cfg: DictConfig) -> float | None:
    from fetalgen.tasks.pseudo_label import pseudo_label  # here: --help stays quick (no torch)

    metrics = run(pseudo_label, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
