"""GPU benchmark: throughput and peak memory of every heavy step, printed as one table with the device name.

    python experiments/bench/gpu.py [--device cuda:0] [--out gpu.json] [--quick]

Rows (random weights and data; the cost does not depend on them):
- diffusion training steps/s of the ``small`` (64 px) and ``paper`` (256 px) UNets, fp32 and bf16 autocast
  (``JointDiffusionModule.diffusion_loss``, backward, AdamW step);
- sampling pairs/s, sde-dpmsolver++ with 20 steps, both UNets;
- SAM ViT-B image encoder images/s at 1024 px, fp32 and bf16 autocast;
- SAM ViT-B mask-decoder training images/s at batch 8, the official decoder image by image against the
  batched decoder (``fetalgen.segmentation.decoder``);
- the peak GPU memory of each row.

Without a CUDA device it says so and exits 0: there is nothing to measure. ``--device cpu`` with small
settings runs every code path on a CPU (a check of the script, not a measurement):

    python experiments/bench/gpu.py --device cpu --quick --presets tiny --sam tiny --encoder-size 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from fetalgen.cli import CONFIG_DIR
from fetalgen.diffusion.sampling import make_sampler, sample_pairs
from fetalgen.segmentation.build import build_sam
from fetalgen.segmentation.decoder import decode_batch


def timed(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """Seconds per call of ``step`` (after ``warmup`` calls) and the peak GPU memory in GiB (nan on a CPU)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return (time.perf_counter() - start) / repeats, peak


def diffusion_module(preset: str, device: torch.device) -> torch.nn.Module:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_diffusion", overrides=[f"model=diffusion/{preset}", "logger=none"])
    GlobalHydra.instance().clear()
    return instantiate(cfg.model).to(device)


def diffusion_rows(preset: str, batch: int, device: torch.device, args: argparse.Namespace) -> list[dict]:
    module = diffusion_module(preset, device)
    size = module.image_size
    data = {
        "image": torch.rand(batch, 1, size, size, device=device),
        "mask": (torch.rand(batch, 1, size, size, device=device) > 0.5).float(),
    }
    optimizer = torch.optim.AdamW(module.unet.parameters(), lr=1e-4)
    rows = []
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

        def step(autocast: torch.autocast | nullcontext = autocast) -> None:
            with autocast:
                loss = module.diffusion_loss(data, drop_labels=False)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds, peak = timed(step, device, args.warmup, args.repeats)
        rows.append({"what": f"diffusion {preset} ({size} px) train, batch {batch}", "precision": precision,
                     "rate": 1 / seconds, "unit": "steps/s", "peak_gib": peak})  # fmt: skip
    unet = module.unet.eval()
    scheduler, steps = make_sampler("sde-dpmsolver++", dict(module.noise_scheduler.config), 20)
    n = args.sample_batch
    with torch.no_grad():
        seconds, peak = timed(lambda: sample_pairs(unet, scheduler, list(range(n)), steps), device, 1, 2)
    rows.append({"what": f"sampling {preset}, sde-dpmsolver++ 20 steps, batch {n}", "precision": "fp32",
                 "rate": n / seconds, "unit": "pairs/s", "peak_gib": peak})  # fmt: skip
    return rows


def sam_rows(device: torch.device, args: argparse.Namespace) -> list[dict]:
    sam = build_sam(args.sam, image_size=args.encoder_size, seed=0).to(device).eval()
    label, size = f"SAM {args.sam}", args.encoder_size
    rows = []
    images = torch.randn(args.encoder_batch, 3, size, size, device=device)
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with torch.no_grad(), autocast:
            seconds, peak = timed(lambda: sam.image_encoder(images), device, 1, args.repeats)
        rows.append({"what": f"{label} encoder {size} px, batch {args.encoder_batch}", "precision": precision,
                     "rate": args.encoder_batch / seconds, "unit": "images/s", "peak_gib": peak})  # fmt: skip

    batch, decoder, prompts = 8, sam.mask_decoder.train(), sam.prompt_encoder
    grid = prompts.image_embedding_size
    embeddings = torch.randn(batch, decoder.transformer_dim, *grid, device=device)
    boxes = torch.tensor([[0.1, 0.12, 0.8, 0.9]], device=device).repeat(batch, 1) * size
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    pe = prompts.get_dense_pe()

    def looped() -> torch.Tensor:
        sparse, dense = prompts(points=None, boxes=boxes, masks=None)
        return torch.cat([decoder(e[None], pe, s[None], d[None], False)[0]
                          for e, s, d in zip(embeddings, sparse, dense, strict=True)])  # fmt: skip

    def batched() -> torch.Tensor:
        sparse, dense = prompts(points=None, boxes=boxes, masks=None)
        return decode_batch(decoder, embeddings, pe, sparse, dense)[0]

    for name, decode in (("image by image", looped), ("batched", batched)):

        def step(decode: Callable[[], torch.Tensor] = decode) -> None:
            decode().square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds, peak = timed(step, device, args.warmup, args.repeats)
        rows.append({"what": f"{label} decoder train, batch {batch}, {name}", "precision": "fp32",
                     "rate": batch / seconds, "unit": "images/s", "peak_gib": peak})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="CUDA device")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-batch", type=int, default=32)
    parser.add_argument("--encoder-batch", type=int, default=4)
    parser.add_argument(
        "--presets", default="small,paper", help="diffusion model presets (conf/model/diffusion)"
    )
    parser.add_argument("--sam", default="vit_b", help="SAM size (random weights)")
    parser.add_argument("--encoder-size", type=int, default=1024, help="SAM encoder input side")
    parser.add_argument("--quick", action="store_true", help="1 warm-up call and 3 timed calls per row")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here, nothing measured (run it on a machine with a GPU).")
        return 0
    if args.quick:
        args.warmup, args.repeats = 1, 3
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    rows = [row for preset in args.presets.split(",") for row in diffusion_rows(preset, 16, device, args)]
    rows += sam_rows(device, args)
    print(f"\n{name}, torch {torch.__version__}")
    print(f"{'what':<58} {'precision':>9} {'rate':>12} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['what']:<58} {r['precision']:>9} {r['rate']:>8.2f} {r['unit']:<9} {r['peak_gib']:>6.2f}")
    looped, batched = (r["rate"] for r in rows if " decoder train" in r["what"])
    print(f"\nbatched / image-by-image decoder training: {batched / looped:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
