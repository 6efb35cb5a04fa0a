"""Benchmark: SAM fine-tuning epoch time, the paper's loop against the embedding cache and the batched decoder.

Three runs train the mask decoder with the same module, data, prompts and seed, one after the other in this
process (Lightning ``Trainer.fit``, no validation):

1. the paper's loop: the encoder on every step, the official decoder image by image;
2. the embedding cache, the official decoder image by image;
3. the embedding cache and the batched decoder (``fetalgen.segmentation.decoder``, what fetalgen trains with).

With the encoder frozen, the cached runs encode each image once (epoch 1), then only run the prompt encoder and
mask decoder. Then evaluation throughput (images/s, 5 box repetitions, one encoder pass per image): the
decoder once per repetition and image against one batched call per image batch. Then the decoder step alone
(:func:`decoder_steps`), and last where its time goes: its two-way transformer and its output upscaling,
forward + backward, image by image against batched, and both as fetalgen runs them
(``fetalgen.segmentation.decoder``).

    python experiments/bench/sam_cache.py                      # ViT-B, random weights, 1024 px, 8 images, batch 8
    python experiments/bench/sam_cache.py --model tiny --image-size 128 --working-size 64   # seconds
    python experiments/bench/sam_cache.py --decoder-only --threads 2        # the ViT-B decoder step alone

The cached runs report their kernel time and page faults per epoch: glibc returns large freed tensors to the
OS, and batched decoding pays for faulting them in again. The decoder step alone is then timed with glibc's
default allocator and with freed memory kept (:func:`freed_memory_kept`).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import logging
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fetalgen.data.phantom import make_phantom
from fetalgen.data.transforms import pad_resize
from fetalgen.segmentation.build import SAM_ARCHS, build_sam, count_parameters
from fetalgen.segmentation.cache import EmbeddingCache
from fetalgen.segmentation.decoder import upscaled_masks
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.segmentation.preprocess import boxes_to_encoder, logits_to_working


class LoopedDecoderModule(SamFinetuneModule):
    """The module with the official decoder path: one ``MaskDecoder`` call per image (the slow reference)."""

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        sparse, dense = self.sam.prompt_encoder(
            points=None, boxes=boxes_to_encoder(self.sam, boxes, hw), masks=None
        )
        pe = self.sam.prompt_encoder.get_dense_pe()
        return torch.cat([
            self.sam.mask_decoder(e[None], pe, s[None], d[None], multimask_output=False)[0]
            for e, s, d in zip(embeddings, sparse, dense, strict=True)
        ])  # fmt: skip


class EpochTimer(pl.Callback):
    """Wall-clock seconds, kernel (system) seconds and minor page faults of every training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.system_seconds: list[float] = []
        self.page_faults: list[int] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start, self.usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.seconds.append(time.perf_counter() - self.start)
        self.system_seconds.append(usage.ru_stime - self.usage.ru_stime)
        self.page_faults.append(usage.ru_minflt - self.usage.ru_minflt)


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside, glibc keeps freed memory for reuse: no ``mmap`` for large blocks (``M_MMAP_MAX`` 0) and no
    trimming of the heap (``M_TRIM_THRESHOLD``); glibc's defaults come back on exit.

    By default glibc gives every freed block over its mmap threshold (at most 32 MiB) back to the OS, so each
    training step page-faults its largest tensors in again (kernel time). Batched decoding at batch 8
    allocates many tensors over 32 MiB; image by image, few. Kept for a whole run this is no cure: the heap
    fragments, and the ViT-B encoder on a batch of 8 (~20 GiB) was killed for memory on a 24 GiB machine.
    PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same page faults.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))):
        raise OSError("mallopt refused the settings: this C library is not glibc?")
    try:
        yield
    finally:
        libc.mallopt(m_mmap_max, 65536)  # glibc's defaults (DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
        libc.mallopt(m_trim_threshold, 128 * 1024)
        libc.malloc_trim(0)


def decoder_steps(sam: torch.nn.Module, batch: int, repeats: int = 5) -> dict[str, dict[str, float]]:
    """One training step on cached embeddings (prompt encoder, decoder forward + backward, AdamW), the
    official decoder image by image against the batched decoder, alternating, with glibc's default allocator
    and with freed memory kept: ``{"<allocator>, <looped|batched>": {seconds, kernel seconds, page faults}}``
    (medians of ``repeats``)."""
    c, (h, w) = sam.mask_decoder.transformer_dim, sam.prompt_encoder.image_embedding_size
    side = 4 * h
    embeddings = torch.randn(batch, c, h, w)
    masks = torch.zeros(batch, 1, side, side)
    masks[:, :, side // 4 : 3 * side // 4, side // 5 : 4 * side // 5] = 1
    boxes = torch.tensor([[side * 0.2, side * 0.25, side * 0.8, side * 0.75]]).repeat(batch, 1)
    modules = {
        "looped": LoopedDecoderModule(copy.deepcopy(sam), partial(torch.optim.AdamW, lr=1e-4)),
        "batched": SamFinetuneModule(copy.deepcopy(sam), partial(torch.optim.AdamW, lr=1e-4)),
    }
    optimizers = {name: module.configure_optimizers() for name, module in modules.items()}

    def step(name: str) -> tuple[float, float, int]:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        loss, _ = modules[name].loss_fn(modules[name].decode(embeddings, boxes, (side, side)), masks)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.perf_counter() - start,
            after.ru_stime - before.ru_stime,
            after.ru_minflt - before.ru_minflt,
        )

    results = {}
    for allocator, scope in (("default allocator", nullcontext), ("freed memory kept", freed_memory_kept)):
        with scope():
            for name in modules:
                step(name)  # warm-up
            runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in modules}
            for _ in range(repeats):
                for name in modules:
                    runs[name].append(step(name))
        for name, values in runs.items():
            seconds, kernel, faults = (float(np.median(v)) for v in zip(*values, strict=True))
            results[f"{allocator}, {name}"] = {"seconds": seconds, "kernel": kernel, "faults": faults}
    return results


def print_decoder_steps(sam: torch.nn.Module, batch: int) -> None:
    """Print :func:`decoder_steps`, batched against looped under each allocator."""
    print(f"\none decoder training step at batch {batch} on cached embeddings ({torch.get_num_threads()} "
          "threads, median of 5, looped and batched alternating):")  # fmt: skip
    steps = decoder_steps(sam, batch)
    for name, r in steps.items():
        print(f"  {name:<29} {r['seconds']:6.3f} s ({r['kernel']:.2f} s in the kernel, "
              f"{r['faults']:.0f} minor page faults)")  # fmt: skip
    for allocator in ("default allocator", "freed memory kept"):
        ratio = steps[f"{allocator}, looped"]["seconds"] / steps[f"{allocator}, batched"]["seconds"]
        print(f"  batched vs looped, {allocator}: {ratio:.2f}x (goal >= 2x at batch 8)")


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


def run(
    sam: torch.nn.Module,
    items: list[dict],
    cache: EmbeddingCache | None,
    looped: bool,
    args: argparse.Namespace,
) -> tuple[EpochTimer, SamFinetuneModule]:
    """Fit the decoder for ``args.epochs``; returns (the epochs' timer, module)."""
    kind = LoopedDecoderModule if looped else SamFinetuneModule
    module = kind(sam, partial(torch.optim.AdamW, lr=1e-4), cache=cache, seed=args.seed)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[timer],
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    pl.seed_everything(args.seed, verbose=False)
    trainer.fit(module, DataLoader(items, batch_size=args.batch_size, shuffle=True))
    return timer, module


def eval_seconds(module: SamFinetuneModule, items: list[dict], reps: int, batch: int) -> dict[str, float]:
    """Seconds of evaluating ``items`` with ``reps`` jittered boxes per image, by part: the encoder (one pass
    per image, as the predictor encodes) and the decoding, the official decoder once per repetition and image
    (``looped``) against one batched call per image batch (``batched``)."""
    predictor, hw = SamBoxPredictor(module), tuple(items[0]["image"].shape[-2:])
    seconds = {"encoder": 0.0, "looped": 0.0, "batched": 0.0}
    with torch.no_grad():
        for k in range(0, len(items), batch):
            start = time.perf_counter()
            embedded = predictor.embed(torch.stack([it["image"] for it in items[k : k + batch]]))
            seconds["encoder"] += time.perf_counter() - start
            n, side = len(embedded.embeddings), hw[-1]
            boxes = torch.tensor([[side * 0.1, side * 0.15, side * 0.85, side * 0.9]]).repeat(reps, n, 1)
            boxes = boxes + torch.arange(reps, dtype=torch.float32)[:, None, None]
            start = time.perf_counter()
            for b in boxes:  # as the predictor: logits on the working image, copied out
                low_res = LoopedDecoderModule.decode(module, embedded.embeddings, b, hw)
                logits_to_working(module.sam, low_res, hw).numpy()
            seconds["looped"] += time.perf_counter() - start
            start = time.perf_counter()
            predictor.logits(embedded, boxes)
            seconds["batched"] += time.perf_counter() - start
    return seconds


def decoder_parts(sam: torch.nn.Module, batch: int, repeats: int = 3) -> dict[str, float]:
    """Seconds of forward + backward of the decoder's two-way transformer and of its output upscaling with
    the mask product, on ``batch`` random image embeddings (the median of ``repeats``): image by image and
    batched with the official modules, and batched as fetalgen runs them (channels-last input to the
    transformer, the channels-last upscaling :func:`upscaled_masks`)."""
    decoder = sam.mask_decoder
    c, (h, w) = decoder.transformer_dim, sam.prompt_encoder.image_embedding_size
    src = torch.randn(batch, h * w, c, requires_grad=True)  # the transformer's image tokens
    pe, tokens = torch.randn(1, c, h, w), torch.randn(batch, 7, c)
    hyper_in = torch.randn(batch, 1, c // 8, requires_grad=True)
    image = src.detach().transpose(1, 2).reshape(batch, c, h, w).requires_grad_()

    def parts(batched: bool) -> list[slice]:
        return [slice(None)] if batched else [slice(i, i + 1) for i in range(batch)]

    def transformer(batched: bool, layout: torch.memory_format = torch.contiguous_format) -> None:
        for part in parts(batched):
            x, pos = image[part].contiguous(memory_format=layout), pe.contiguous(memory_format=layout)
            hs, out = decoder.transformer(x, pos.expand(len(x), -1, -1, -1), tokens[part])
            (hs.sum() + out.sum()).backward()

    def official_upscaling(batched: bool) -> None:  # MaskDecoder.predict_masks' lines
        for part in parts(batched):
            x = src[part]
            upscaled = decoder.output_upscaling(x.transpose(1, 2).reshape(len(x), c, h, w))
            b, cu, hu, wu = upscaled.shape
            (hyper_in[part] @ upscaled.view(b, cu, hu * wu)).sum().backward()

    def channels_last_upscaling(batched: bool) -> None:
        for part in parts(batched):
            upscaled_masks(decoder.output_upscaling, src[part], hyper_in[part], (h, w)).sum().backward()

    def timed(step: Callable[[bool], None], batched: bool) -> float:
        step(batched)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(batched)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    return {
        "two-way transformer, image by image": timed(transformer, False),
        "two-way transformer, batched": timed(transformer, True),
        "two-way transformer, channels-last input (fetalgen), batched": timed(
            partial(transformer, layout=torch.channels_last), True
        ),
        "output upscaling + mask product, official, image by image": timed(official_upscaling, False),
        "output upscaling + mask product, official, batched": timed(official_upscaling, True),
        "output upscaling + mask product, channels-last (fetalgen), batched": timed(
            channels_last_upscaling, True
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="vit_b", choices=sorted(SAM_ARCHS), help="SAM size (random weights)"
    )
    parser.add_argument("--image-size", type=int, default=1024, help="encoder input size")
    parser.add_argument("--working-size", type=int, default=256, help="side of the training images and masks")
    parser.add_argument("--images", type=int, default=8, help="training images (phantoms)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the ratio uses epochs 2..)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-repetitions", type=int, default=5, help="box repetitions of the evaluation")
    parser.add_argument("--cache-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="only the decoder step and its parts, image by image vs batched (no encoder: a minute)",
    )
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the cache pays off from the second epoch")
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    sam = build_sam(args.model, image_size=args.image_size, seed=args.seed)
    if args.decoder_only:
        print_decoder_steps(sam, args.batch_size)
        print_decoder_parts(sam, args.batch_size)
        return
    items = phantom_items(args.images, args.working_size, args.seed)
    print(
        f"SAM {args.model} (random init, {count_parameters(sam) / 1e6:.1f} M parameters), encoder input "
        f"{args.image_size} px, {args.images} images at {args.working_size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs, {torch.get_num_threads()} CPU threads, cache {args.cache_dtype}",
        flush=True,
    )
    paper_timer, paper_module = run(copy.deepcopy(sam), items, None, True, args)
    print(f"paper's loop done: {' '.join(f'{s:.2f}' for s in paper_timer.seconds)} s", flush=True)
    looped_timer, _ = run(copy.deepcopy(sam), items, EmbeddingCache(dtype=args.cache_dtype), True, args)
    print(f"cache + looped decoder done: {' '.join(f'{s:.2f}' for s in looped_timer.seconds)} s", flush=True)
    cached_timer, cached_module = run(sam, items, EmbeddingCache(dtype=args.cache_dtype), False, args)
    print(f"cache + batched decoder done: {' '.join(f'{s:.2f}' for s in cached_timer.seconds)} s", flush=True)
    paper, looped, cached = paper_timer.seconds, looped_timer.seconds, cached_timer.seconds

    print(f"\n{'epoch':>5} {'paper loop [s]':>15} {'cache+looped [s]':>17} {'cache+batched [s]':>18} "
          f"{'paper/batched':>14} {'looped/batched':>15}")  # fmt: skip
    for epoch, (p, lo, c) in enumerate(zip(paper, looped, cached, strict=True), start=1):
        print(f"{epoch:>5} {p:>15.3f} {lo:>17.3f} {c:>18.3f} {p / c:>13.1f}x {lo / c:>14.2f}x")
    p_mean, lo_mean, c_mean = (float(np.mean(x[1:])) for x in (paper, looped, cached))
    print(f"\nepochs 2-{args.epochs} (batch {args.batch_size}):")
    print(f"  cache + looped decoder:  {p_mean / lo_mean:6.1f}x faster than the paper's loop")
    print(f"  cache + batched decoder: {p_mean / c_mean:6.1f}x faster than the paper's loop (goal >= 100x)")
    print(f"  batched vs looped decoder step: {lo_mean / c_mean:.2f}x (goal >= 2x at batch 8)")
    for name, timer in (("looped", looped_timer), ("batched", cached_timer)):
        print(f"  cache + {name} decoder, per epoch: {np.mean(timer.system_seconds[1:]):.2f} s in the kernel, "
              f"{np.mean(timer.page_faults[1:]):.0f} minor page faults")  # fmt: skip
    encoder_share = (p_mean - lo_mean) / p_mean
    print(f"  the encoder is {encoder_share:.1%} of the paper's epoch; the cached epochs pay the decoder step "
          "alone (prompt encoder, decoder forward + backward, optimizer), so its time bounds the ratio")  # fmt: skip
    print(f"cache: {len(cached_module.cache)} embeddings, {cached_module.cache.hits} hits, "
          f"{cached_module.cache.misses} misses")  # fmt: skip
    with torch.no_grad():  # the runs trained the same decoder: compare their outputs on the first image
        image, box = (
            items[0]["image"][None],
            torch.tensor([[0.0, 0.0, args.working_size - 1.0, args.working_size - 1.0]]),
        )
        diff = (paper_module(image, box) - cached_module(image, box)).abs().max().item()
    print(
        f"max |logit difference| after training, paper's loop vs cache + batched ({args.cache_dtype}): {diff:.2e}"
    )

    t = eval_seconds(cached_module.eval(), items, args.eval_repetitions, args.batch_size)
    n = len(items)
    before, after = n / (t["encoder"] + t["looped"]), n / (t["encoder"] + t["batched"])
    print(
        f"\nevaluation, {args.eval_repetitions} box repetitions, batch {args.batch_size} (the same encoder pass "
        f"per image, {t['encoder']:.1f} s): {before:.3f} images/s looped, {after:.3f} images/s batched "
        f"({after / before:.2f}x); the decoding alone {n / t['looped']:.2f} vs {n / t['batched']:.2f} images/s "
        f"({t['looped'] / t['batched']:.2f}x)"
    )
    print_decoder_steps(sam, args.batch_size)
    print_decoder_parts(sam, args.batch_size)


def print_decoder_parts(sam: torch.nn.Module, batch: int) -> None:
    """Print :func:`decoder_parts`, each against the first line of its part."""
    threads = torch.get_num_threads()
    print(
        f"\nthe decoder step's parts, forward + backward at batch {batch} ({threads} threads, median of 3):"
    )
    reference: dict[str, float] = {}
    for name, seconds in decoder_parts(sam, batch).items():
        part = name.split(",")[0]
        reference.setdefault(part, seconds)
        print(f"  {name:<68} {seconds:7.3f} s ({reference[part] / seconds:.2f}x)")


if __name__ == "__main__":
    main()
