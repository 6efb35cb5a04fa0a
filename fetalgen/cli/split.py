"""``fetalgen-split``: fix the held-out validation and test subjects once (conf/split.yaml).

Example: ``fetalgen-split data=hc18 num_val=20 num_test=100 out=splits/hc18``, then give
``data.split_file=splits/hc18`` to fetalgen-train-diffusion and fetalgen-finetune.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fetalgen.cli import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="split")
def main(cfg: DictConfig) -> None:
    from fetalgen.data.protocol import make_split

    make_split(
        hydra.utils.instantiate(cfg.data.source),
        cfg.out,
        num_val=int(cfg.num_val),
        num_test=int(cfg.num_test),
        seed=int(cfg.seed),
        pool_list=cfg.pool_list,
        pool_missing=cfg.pool_missing,
        overwrite=bool(cfg.overwrite),
    )


if __name__ == "__main__":
    main()
