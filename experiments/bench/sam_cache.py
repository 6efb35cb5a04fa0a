"""Benchmark: SAM fine-tuning epoch time with the embedding cache vs the paper's way (encoder on every step).

Both runs train the mask decoder with the same module, data, prompts and seed, one after the other in this
process (Lightning ``Trainer.fit``, no validation); only ``cache`` differs. With the encoder frozen, the cached
run encodes each image once (epoch 1) and then only runs the prompt encoder and mask decoder.

    python experiments/bench/sam_cache.py                      # ViT-B, random weights, 1024 px, 4 images, 3 epochs
    python experiments/bench/sam_cache.py --model tiny --image-size 128 --working-size 64   # seconds
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fetalgen.data.phantom import make_phantom
from fetalgen.data.transforms import pad_resize
from fetalgen.segmentation.build import SAM_ARCHS, build_sam, count_parameters
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.module import SamFinetuneModule


class EpochTimer(pl.Callback):
    """Wall-clock seconds of every training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def phantom_items(n: int, size: int, seed: int) -> list[dict]:
    """``n`` phantom pairs at the working size, as the data layer's dataset items."""
    items = []
    for i in range(n):
        p = make_phantom(seed + i, shape=(270, 400))
        image, mask, _ = pad_resize(p.image, p.mask, size)
        items.append({
            "image": torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "name": f"phantom_{i:04d}",
        })  # fmt: skip
    return items


def run(sam: torch.nn.Module, items: list[dict], cache: EmbeddingCache | None, args: argparse.Namespace):
    """Fit the decoder for ``args.epochs``; returns (epoch seconds, module)."""
    module = SamFinetuneModule(sam, partial(torch.optim.AdamW, lr=1e-4), cache=cache, seed=args.seed)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[timer],
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    pl.seed_everything(args.seed, verbose=False)
    trainer.fit(module, DataLoader(items, batch_size=args.batch_size, shuffle=True))
    return timer.seconds, module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="vit_b", choices=sorted(SAM_ARCHS), help="SAM size (random weights)"
    )
    parser.add_argument("--image-size", type=int, default=1024, help="encoder input size")
    parser.add_argument("--working-size", type=int, default=256, help="side of the training images and masks")
    parser.add_argument("--images", type=int, default=4, help="training images (phantoms)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the ratio uses epochs 2..)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--cache-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the cache pays off from the second epoch")
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    sam = build_sam(args.model, image_size=args.image_size, seed=args.seed)
    items = phantom_items(args.images, args.working_size, args.seed)
    print(
        f"SAM {args.model} (random init, {count_parameters(sam) / 1e6:.1f} M parameters), encoder input "
        f"{args.image_size} px, {args.images} images at {args.working_size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs, {torch.get_num_threads()} CPU threads, cache {args.cache_dtype}",
        flush=True,
    )
    paper, paper_module = run(copy.deepcopy(sam), items, None, args)
    print(f"paper way done: {' '.join(f'{s:.2f}' for s in paper)} s", flush=True)
    cached, cached_module = run(sam, items, EmbeddingCache(dtype=args.cache_dtype), args)
    print(f"cached done:    {' '.join(f'{s:.2f}' for s in cached)} s", flush=True)

    print(f"\n{'epoch':>5} {'encoder every step [s]':>24} {'cached [s]':>11} {'ratio':>8}")
    for epoch, (p, c) in enumerate(zip(paper, cached, strict=True), start=1):
        print(f"{epoch:>5} {p:>24.3f} {c:>11.3f} {p / c:>7.1f}x")
    ratio = float(np.mean(paper[1:]) / np.mean(cached[1:]))
    print(f"\nepochs 2-{args.epochs}: {ratio:.1f}x faster with the cache (goal >= 100x)")
    print(f"cache: {len(cached_module.cache)} embeddings, {cached_module.cache.hits} hits, "
          f"{cached_module.cache.misses} misses")  # fmt: skip
    with torch.no_grad():  # the two runs trained the same decoder: compare their outputs on the first image
        image, box = (
            items[0]["image"][None],
            torch.tensor([[0.0, 0.0, args.working_size - 1.0, args.working_size - 1.0]]),
        )
        diff = (paper_module(image, box) - cached_module(image, box)).abs().max().item()
    print(f"max |logit difference| after training, paper way vs cached ({args.cache_dtype}): {diff:.2e}")


if __name__ == "__main__":
    main()
