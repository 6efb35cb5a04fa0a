"""Peak memory of each preset's diffusion training and SAM fine-tuning, run shrunk (a few steps) one by one.

Peak memory is reached within the first steps (model, optimizer state, activations of one batch, the data and
the embedding cache), so a few steps measure it. Each run is a fresh process; it reports its peak resident
memory (RSS) and, on a GPU, the peak of torch's CUDA allocator.

    python experiments/bench/memory.py [--presets demo,cpu,paper] [--trainer cpu|gpu]

Needs HC18 (FETALGEN_HC18_DIR) for the cpu and paper presets. The paper presets without SAM weights build
ViT-B with random weights (the same memory). The paper fine-tuning runs on 8 + 4 images here (ViT-B encodes
each in ~9 s on a CPU); its embedding cache then grows by 2 MiB per further image (256x64x64, float16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__")
finally:
    import torch
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    print("PEAK " + json.dumps({{"rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "gpu_gib": gpu}}))
"""

SHRINK = {
    "diffusion": ["callbacks.sample_grid.every_n_steps=0"],
    "finetune": ["test_split=false", "test_sets=null", "model.sam.checkpoint=null"],
}
MODULES = {"diffusion": "fetalgen.cli.train_diffusion", "finetune": "fetalgen.cli.finetune"}


def measure(
    task: str, preset: str, trainer: str, out: Path, steps: int = 3, extra: list[str] | None = None
) -> dict:
    argv = [MODULES[task], f"experiment={preset}/{task}", f"trainer={trainer}", "logger=none",
            f"hydra.run.dir={out / f'{preset}-{task}'}", f"paths.data_dir={out / 'data'}",
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", *SHRINK[task],
            *(extra or [])]  # fmt: skip
    if task == "finetune" and preset != "demo":
        argv.append("data=hc18")
    if task == "finetune" and preset == "paper":
        argv += ["data.num_real=8", "data.num_val=4", "data.num_test=0"]
    if trainer == "cpu":
        argv.append("trainer.precision=32")
    code = CHILD.format(argv=argv, module=MODULES[task])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    peak = next((line for line in done.stdout.splitlines() if line.startswith("PEAK ")), None)
    if done.returncode != 0 or peak is None:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
        killed = " (killed by a signal: out of memory?)" if done.returncode < 0 else ""
        raise RuntimeError(f"{preset}/{task} failed with exit status {done.returncode}{killed}:\n{tail}")
    return json.loads(peak[5:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="demo,cpu,paper")
    parser.add_argument("--trainer", default="cpu", help="cpu | gpu")
    parser.add_argument("--tasks", default="diffusion,finetune", help="diffusion and/or finetune")
    parser.add_argument(
        "--steps", type=int, default=3, help="optimizer steps per run (peak is reached early)"
    )
    parser.add_argument(
        "--extra", default="", help="comma-separated overrides added to every run (e.g. data.batch_size=2)"
    )
    args = parser.parse_args()
    print(f"{'preset':<8} {'task':<10} {'peak RSS GiB':>13} {'peak GPU GiB':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            for task in args.tasks.split(","):
                peak = measure(
                    task, preset, args.trainer, Path(tmp), args.steps, [e for e in args.extra.split(",") if e]
                )
                gpu = "–" if peak["gpu_gib"] is None else f"{peak['gpu_gib']:.2f}"
                print(f"{preset:<8} {task:<10} {peak['rss_gib']:>13.2f} {gpu:>13}", flush=True)


if __name__ == "__main__":
    main()
