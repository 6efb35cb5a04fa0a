"""``make gpu-check``: the first command for the first GPU machine. gpu.py's rows and LiteMedSAM's (lite_medsam.py), then both training tasks for 20
steps in bf16-mixed with DDP over every visible GPU (trainer=ddp, the subprocess launcher), on phantom data with
random weights; one JSON and one table.

    python experiments/bench/gpu_check.py [--out gpu_check.json] [--steps 20]

Without a CUDA device it says so and exits 0. ``--cpu-rehearsal`` runs the same tasks on the CPU with the tiny
models (gloo, 2 ranks, 32-bit): a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def task(name: str, module: str, overrides: list[str], folder: Path) -> dict:
    """Run one entry point; its wall time, exit status and the metrics it wrote."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *overrides, f"hydra.run.dir={folder}"],
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    row = {"what": name, "seconds": seconds, "ok": done.returncode == 0}
    row |= {k: metrics[k] for k in ("global_step", "train/steps", "train/loss", "val/dice") if k in metrics}
    if done.returncode != 0:
        row["error"] = done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else "?"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "gpu_check.json")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--cpu-rehearsal", action="store_true", help="the same tasks on the CPU (not a measurement)"
    )
    args = parser.parse_args()
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device here, nothing run (make gpu-check is for a machine with a GPU).")
        return 0
    unet, sam = "paper", ["model=sam/vit_b", "model.sam.checkpoint=null", "data.image_size=256"]
    if args.cpu_rehearsal:
        trainer = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"]
        card, bench = f"CPU rehearsal ({torch.get_num_threads()} threads)", None
        unet, sam = "tiny", ["model=sam/tiny", "data.image_size=64", "model.sam.image_size=64"]
    else:
        gpus = torch.cuda.device_count()
        trainer = ["trainer=ddp", f"trainer.devices={gpus}", "trainer.precision=bf16-mixed"]
        card = f"{gpus} x {torch.cuda.get_device_name(0)}"
        bench = HERE / "gpu.json"
        subprocess.run([sys.executable, str(HERE / "gpu.py"), "--quick", "--out", str(bench)], check=False)
        subprocess.run([sys.executable, str(HERE / "lite_medsam.py"), "--device", "cuda", "--seconds", "3",
                        "--out", str(HERE / "lite_medsam_gpu.json")], check=False)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="fetalgen-gpu-check-"))
    data = ["data=folder", f"data.source.root={work / 'phantom'}", "data.num_real=16", "data.num_val=4",
            "logger=csv", "trainer.enable_progress_bar=false", f"trainer.max_steps={args.steps}",
            f"trainer.val_check_interval={args.steps}", f"paths.log_dir={work / 'logs'}"]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "fetalgen.cli.phantom", f"out={work / 'phantom'}", "n=24"], check=True
    )
    rows = [
        task(f"diffusion, {unet} UNet", "fetalgen.cli.train_diffusion",
             [f"model=diffusion/{unet}", *trainer, *data, "data.batch_size=4", "callbacks.sample_grid.every_n_steps=0",
              "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2"], work / "diffusion"),
        task(f"fine-tuning, {sam[0].split('/')[1]} (random weights, cache)", "fetalgen.cli.finetune",
             [*sam, "data.num_test=4", *trainer,
              *data, "data.batch_size=8", "eval.repetitions=1"], work / "finetune"),
    ]  # fmt: skip
    print(f"\n{card}, torch {torch.__version__}, {args.steps} steps each, {' '.join(trainer)}")
    print(f"{'task':<58} {'ok':>4} {'seconds':>9} {'steps':>6}")
    for r in rows:
        steps = r.get("global_step", r.get("train/steps", ""))
        print(f"{r['what']:<58} {'yes' if r['ok'] else 'NO':>4} {r['seconds']:>9.1f} {steps!s:>6}"
              + (f"  {r['error']}" if "error" in r else ""))  # fmt: skip
    benchmark = json.loads(bench.read_text()) if bench is not None and bench.is_file() else None
    args.out.write_text(json.dumps({"device": card, "torch": torch.__version__, "trainer": trainer, "tasks": rows,
                                    "benchmark": benchmark}, indent=2))  # fmt: skip
    print(f"\nwritten to {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
