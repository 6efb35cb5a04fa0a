"""Training callbacks for the joint diffusion model: a grid of sampled pairs every N steps."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from fetalgen.diffusion.channels import unpack
from fetalgen.diffusion.module import JointDiffusionModule
from fetalgen.diffusion.postprocess import clean_mask
from fetalgen.diffusion.sampling import SAMPLERS, masks_to_tensor
from fetalgen.report.figures import pair_grid
from fetalgen.utils.files import write_png

log = logging.getLogger(__name__)


class SampleGridCallback(pl.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end of training), sample pairs with the EMA weights.

    The samples use a fixed seed (the same noise every time, so grids are comparable across steps); class
    labels cycle over the classes for a class-conditional model; a mask-conditioned generator draws its images
    for the first ``n`` training masks. The grid goes to every logger that takes
    images (W&B ``log_image``, TensorBoard ``add_image``) and to ``<dirpath>/step_XXXXXX.png``.

    Args:
        dirpath: folder of the PNG grids.
        every_n_steps: sampling period in optimizer steps (0: only at the end of training).
        n: number of pairs.
        sampler: ``ddpm``, ``ddim``, ``dpmsolver++`` or ``sde-dpmsolver++``.
        steps: sampling steps (None: the sampler's default).
        seed: base seed of the pairs.
        guidance_scale: classifier-free guidance scale for a class-conditional model.
        key: logged image name.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int = 500,
        n: int = 8,
        sampler: str = "sde-dpmsolver++",
        steps: int | None = 20,
        seed: int = 0,
        guidance_scale: float = 1.0,
        key: str = "samples/grid",
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:  # fail before training, not at the first grid
            raise ValueError(f"sample_grid: unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.n = int(n)
        self.sampler = sampler
        self.steps = steps
        self.seed = int(seed)
        self.guidance_scale = float(guidance_scale)
        self.key = key
        self.last_step: int | None = None

    def make_grid(self, pl_module: JointDiffusionModule, masks: torch.Tensor | None = None) -> np.ndarray:
        """Sample ``n`` pairs with the module's EMA weights (for ``masks`` [n,1,S,S], a mask-conditioned
        generator) and return the RGB grid."""
        labels = [i % pl_module.num_classes for i in range(self.n)] if pl_module.num_classes else None
        x = pl_module.sample(self.n, self.seed, self.sampler, self.steps, labels, self.guidance_scale, masks)
        images, channels = unpack(x.float().cpu())
        masks = np.stack([clean_mask(c[0].numpy()) for c in channels])
        return pair_grid(images[:, 0].numpy(), masks)

    def log_grid(self, trainer: pl.Trainer, pl_module: JointDiffusionModule) -> Path | None:
        """Sample, write the PNG and send the grid to the loggers (global rank 0 only)."""
        step = trainer.global_step
        if self.last_step == step or not trainer.is_global_zero:
            return None
        self.last_step = step
        masks = None
        if pl_module.generator_kind == "mask_conditioned":
            train = trainer.datamodule.train_set.masks
            masks = masks_to_tensor([np.asarray(train[i % len(train)]) > 0 for i in range(self.n)])
        grid = self.make_grid(pl_module, masks)
        path = write_png(self.dirpath / f"step_{step:06d}.png", grid)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=[grid], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.key, grid, step, dataformats="HWC")
        log.info("sample grid at step %d: %s", step, path)
        return path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.log_grid(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_grid(trainer, pl_module)
