"""Benchmark: LiteMedSAM on this machine, beside SAM ViT-B measured the same way in the same run.

Rows, each timed after a warm-up call, for LiteMedSAM (TinyViT at 256 px, the packaged pretrained weights) and
ViT-B (random weights: the speed is the same; at its 1024 px input):

1. encoder images/s at batch 1 and at batch ``--batch``;
2. one decoder training step on cached embeddings (batch ``--train-batch``, Dice + BCE, AdamW), steps/s;
3. ``Segmenter.predict`` end to end per image (one 540 x 800 image read from memory, the automatic prompt), images/s.

Then the ratios LiteMedSAM / ViT-B. ``--quick`` times each row for about a second (a check of the script).

    python experiments/bench/lite_medsam.py [--threads 2] [--out lite_medsam.json]
    python experiments/bench/lite_medsam.py --skip-vit-b --device cuda        # on a GPU (make gpu-check)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fetalgen.segmentation.build import build_sam, native_image_size
from fetalgen.segmentation.losses import SegmentationLoss
from fetalgen.segmentation.module import SamFinetuneModule
from fetalgen.segmentation.predictor import SamBoxPredictor
from fetalgen.segmentation.preprocess import to_encoder_input
from fetalgen.segmentation.segmenter import Segmenter


def rate(step: Callable[[], int], seconds: float, device: torch.device) -> float:
    """Items per second of ``step`` (which returns how many it did), after one warm-up call."""
    step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or done == 0:
        done += step()
    sync()
    return done / (time.perf_counter() - start)


def measure(model_type: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """The three rows (module doc) of one SAM size."""
    weights = "pretrained" if model_type == "lite_medsam" else None
    sam = build_sam(model_type, checkpoint=weights, seed=0).to(device).eval()
    side = native_image_size(model_type)
    out: dict[str, float] = {}
    for batch in sorted({1, args.batch}):
        images = torch.rand(batch, 1, side, side, device=device)

        @torch.inference_mode()
        def encode(images: torch.Tensor = images) -> int:
            sam.image_encoder(to_encoder_input(sam, images))
            return len(images)

        out[f"encoder images/s, batch {batch}"] = rate(encode, args.seconds, device)
    module = SamFinetuneModule(sam, optimizer=partial(torch.optim.AdamW, lr=1e-4)).to(device)
    with torch.inference_mode():
        embedding = sam.image_encoder(to_encoder_input(sam, torch.rand(1, 1, side, side, device=device)))
    embeddings = embedding.repeat(args.train_batch, 1, 1, 1).clone()
    working = args.working_size
    boxes = torch.tensor([[20.0, 30.0, working - 40.0, working - 20.0]] * args.train_batch, device=device)
    target = torch.zeros(args.train_batch, 1, working, working, device=device)
    target[..., 40:200, 30:220] = 1
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = SegmentationLoss()

    def train_step() -> int:
        loss, _ = loss_fn(module.decode(embeddings, boxes, (working, working)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return 1

    out["decoder training steps/s"] = rate(train_step, args.seconds, device)
    segmenter = Segmenter(SamBoxPredictor(module.eval(), device), working)
    image = np.random.default_rng(0).integers(0, 255, (540, 800), dtype=np.uint8)
    out["predict images/s (automatic prompt)"] = rate(
        lambda: len(segmenter.predict([image])), args.seconds, device
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="the larger encoder batch")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--working-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per row")
    parser.add_argument("--quick", action="store_true", help="about a second per row")
    parser.add_argument("--skip-vit-b", action="store_true", help="LiteMedSAM only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 0.5
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"lite_medsam": measure("lite_medsam", args, device)}
    if not args.skip_vit_b:
        results["vit_b"] = measure("vit_b", args, device)
    rows = list(results["lite_medsam"])
    print(f"{'':40s} {'LiteMedSAM':>12s}" + ("" if args.skip_vit_b else f" {'ViT-B':>12s} {'ratio':>8s}"))
    for row in rows:
        line = f"{row:40s} {results['lite_medsam'][row]:12.3f}"
        if not args.skip_vit_b:
            line += (
                f" {results['vit_b'][row]:12.3f} {results['lite_medsam'][row] / results['vit_b'][row]:8.1f}x"
            )
        print(line)
    report = {"device": str(device), "threads": args.threads, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
