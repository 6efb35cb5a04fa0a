"""Benchmark: one diffusion training step and one sampling step on the CPU, plain against candidate speed-ups.

For the ``small`` (64 px) and ``paper`` (256 px) UNets (random weights), side by side in one run:
- training step (``diffusion_loss``, backward, AdamW): default layout against channels-last, and the
  for-each AdamW against the fused one;
- sampling step (one UNet call of the denoising loop): ``no_grad`` against ``inference_mode`` and channels-last,
  and seconds per pair at several sampling batch sizes;
- the largest output difference of each variant against the default (it must stay at float rounding).

    python experiments/bench/diffusion_cpu.py [--presets small,paper] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from fetalgen.cli import CONFIG_DIR


def seconds(step: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def build(preset: str) -> torch.nn.Module:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_diffusion", overrides=[f"model=diffusion/{preset}", "logger=none"])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    return instantiate(cfg.model)


def train_rows(preset: str, batch: int, args: argparse.Namespace) -> None:
    base = build(preset)
    size = base.image_size
    data = {
        "image": torch.rand(batch, 1, size, size),
        "mask": (torch.rand(batch, 1, size, size) > 0.5).float(),
    }
    results = {}
    for name, channels_last, fused in (("default", False, False), ("channels-last", True, False),
                                       ("fused AdamW", False, True)):  # fmt: skip
        module = copy.deepcopy(base)
        if channels_last:
            module.unet.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(module.unet.parameters(), lr=1e-4, fused=fused)

        def step(module: torch.nn.Module = module, optimizer: torch.optim.Optimizer = optimizer) -> None:
            torch.manual_seed(1)
            module.diffusion_loss(data, drop_labels=False).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        results[name] = seconds(step, args.warmup, args.repeats)
    ref = results["default"]
    for name, s in results.items():
        print(f"  train {preset:<6} batch {batch:<3} {name:<16} {s:8.3f} s/step  {ref / s:5.2f}x")


def sample_rows(preset: str, args: argparse.Namespace) -> None:
    base = build(preset).unet.eval().requires_grad_(False)
    size = base.config.sample_size
    last = copy.deepcopy(base).to(memory_format=torch.channels_last)
    for batch in args.sample_batches:
        x = torch.randn(batch, 2, size, size, generator=torch.Generator().manual_seed(0))
        t = torch.full((batch,), 500)
        out = {}

        def run(
            unet: torch.nn.Module,
            context: Callable,
            key: str,
            x: torch.Tensor = x,
            t: torch.Tensor = t,
            out=out,
        ) -> float:
            def step() -> None:
                with context():
                    out[key] = unet(x, t).sample

            return seconds(step, args.warmup, args.repeats)

        rows = {"no_grad": run(base, torch.no_grad, "no_grad"),
                "inference_mode": run(base, torch.inference_mode, "inference_mode"),
                "inference + channels-last": run(last, torch.inference_mode, "last")}  # fmt: skip
        diff = (out["last"] - out["no_grad"]).abs().max().item()
        ref = rows["no_grad"]
        for name, s in rows.items():
            print(f"  sample {preset:<6} batch {batch:<3} {name:<26} {s / batch * 1e3:8.2f} ms/pair/step  "
                  f"{ref / s:5.2f}x")  # fmt: skip
        print(f"    max |output difference| channels-last vs default: {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--sample-batches", type=lambda s: [int(v) for v in s.split(",")], default=[8, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for preset in args.presets.split(","):
        train_rows(preset, args.train_batch, args)
        sample_rows(preset, args)


if __name__ == "__main__":
    main()
