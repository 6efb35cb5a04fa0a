"""``make demo``: the whole pipeline on embedded phantom data at tiny scale, on CPU, in a few minutes.

0. split the phantom pairs once: held-out validation and test pairs, and the training pool;
1. train the joint image-and-mask diffusion (tiny UNet, 32 px) on the pool;
2. sample synthetic pairs with QC and the memorisation check;
3. fine-tune the tiny SAM with synthetic/real ratios 0, 1 and 2 (a Hydra multirun, equal step budgets);
4. evaluate on the held-out phantom pairs beside the box-ellipse baseline and write a short report
   (Markdown + PNG: sample grid, Dice against the ratio, the table).

    python experiments/demo.py [--out outputs/demo] [--ratios 0,1,2] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from pipeline import run_step

from fetalgen.data.io import load_image
from fetalgen.data.synthetic import read_manifest
from fetalgen.report.aggregate import collect_runs, markdown_table, mean_std_table, summarise
from fetalgen.report.figures import pair_grid
from fetalgen.report.plots import plot_metric
from fetalgen.report.synthetic import synthetic_set_markdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory")
    parser.add_argument("--ratios", default="0,1,2", help="synthetic/real ratios of the SAM sweep")
    parser.add_argument("--seeds", default="0", help="seeds of the SAM sweep (comma-separated)")
    parser.add_argument("--diffusion-steps", type=int, default=1500, help="training steps of the diffusion")
    parser.add_argument("--n-synthetic", type=int, default=64, help="synthetic pairs to sample")
    parser.add_argument("--sam-steps", type=int, default=800, help="SAM fine-tuning steps (every run)")
    parser.add_argument(
        "--segmenter-steps", type=int, default=300, help="training steps of the pair-agreement segmenter"
    )
    parser.add_argument("--logger", default="wandb", help="wandb (offline) | csv | none")
    return parser.parse_args(argv)


def synthetic_grid(root: Path, out: Path, n: int = 12) -> tuple[Path, str]:
    """A PNG grid of the first ``n`` synthetic pairs that passed QC (or of the first pairs if none did).

    Returns:
        The PNG path and a caption saying which pairs it shows.
    """
    entries = read_manifest(root)
    shown = [e for e in entries if e.qc_pass][:n]
    caption = "Synthetic pairs from the joint diffusion model that passed QC (image | mask contour):"
    if not shown:
        shown = entries[:n]
        caption = "No synthetic pair passed QC (train the diffusion longer); the first pairs, all failed:"
    images = np.stack([load_image(root / e.image) / 255.0 for e in shown])
    masks = np.stack([load_image(root / e.mask) > 127 for e in shown])
    grid = pair_grid(images, masks, ncols=4)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return out, caption


def write_report(out: Path, sweep: Path, synthetic: Path, timings: dict[str, float]) -> Path:
    """``report.md`` with the sample grid, Dice against the ratio (beside the baseline) and the table."""
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_qc = json.loads((synthetic / "summary.json").read_text())
    runs = collect_runs(sweep)
    x = "data.synthetic_ratio"
    dice, baseline = "test/phantom/dice", "test/phantom/baseline_dice"
    metrics = [dice, f"{dice}_std", baseline, f"{baseline}_std"]
    summary = summarise(runs, [x], metrics)
    chart = plot_metric(
        summary, x, dice, report_dir / "dice_vs_ratio.png", baseline=baseline,
        title="Tiny SAM on phantom test pairs",
    )  # fmt: skip
    grid, caption = synthetic_grid(synthetic, report_dir / "synthetic_pairs.png")
    table = mean_std_table(
        summary, {"SAM Dice (%)": dice, "box-ellipse Dice (%)": baseline}, {x: "synthetic / real"}
    )
    qc_rate = summary_qc.get("qc_pass_rate")
    memo = (summary_qc.get("memorisation") or {}).get("rate")
    lines = [
        "# fetalgen demo (phantom data, tiny models, CPU)",
        "",
        caption,
        "",
        f"![synthetic pairs]({grid.name})",
        "",
        f"QC pass rate {qc_rate:.0%}, memorised {memo:.0%} of {summary_qc.get('n')} pairs "
        "(failed pairs stay on disk, marked in manifest.jsonl, and are not used for training).",
        "",
        *synthetic_set_markdown(synthetic, report_dir, "How the synthetic pairs compare with real ones"),
        "The fidelity features come from a random-init tiny SAM here (no weights on a CPU demo): a check that",
        "the figures are computed, not a measure of realism.",
        "",
        "## Tiny SAM: Dice on held-out phantom pairs against the synthetic/real ratio",
        "",
        "Mean ± sample std (`± over`: over seeds, or for one seed over box-jitter repetitions); the box-ellipse",
        "baseline uses the same prompts.",
        "Every run trains the same number of optimizer steps; the generator never saw a held-out pair.",
        "",
        markdown_table(table),
        f"![Dice against the ratio]({chart.name})",
        "",
        "Step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".",
        "",
        f"Runs: {sweep}; synthetic set: {synthetic}.",
        "",
        "Phantoms and tiny random-init models only show that the pipeline works end to end; they say",
        "nothing about real ultrasound. Use `make reproduce-paper` for the real protocol.",
    ]
    report = report_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    logs = out / "logs"
    start = time.perf_counter()
    timings: dict[str, float] = {}
    diffusion, synthetic, sweep, split = out / "diffusion", out / "synthetic", out / "sweep", out / "split"
    common = [f"paths.data_dir={out / 'data'}", f"paths.log_dir={logs}"]
    timings["split"] = run_step(
        "0/4 split the phantom pairs once: validation and test pairs held out of every model",
        "fetalgen-split",
        ["data=phantom", "num_val=8", "num_test=24", f"out={split}", f"hydra.run.dir={out / 'split-run'}", *common],
        logs,
    )  # fmt: skip
    timings["diffusion"] = run_step(
        "1/4 train the joint diffusion on the phantom training pool",
        "fetalgen-train-diffusion",
        ["experiment=demo/diffusion", f"data.split_file={split}", "data.load_holdout=false",
         f"trainer.max_steps={args.diffusion_steps}", f"logger={args.logger}", f"hydra.run.dir={diffusion}",
         *common],
        logs,
    )  # fmt: skip
    timings["sampling"] = run_step(
        "2/4 sample synthetic pairs with QC",
        "fetalgen-sample",
        [f"ckpt_path={diffusion / 'checkpoints' / 'last.ckpt'}", f"n={args.n_synthetic}", f"out={synthetic}",
         f"hydra.run.dir={out / 'sample'}", "fidelity/features=sam_tiny",
         f"fidelity.segmenter_steps={args.segmenter_steps}", *common],
        logs,
    )  # fmt: skip
    timings["SAM sweep"] = run_step(
        "3/4 fine-tune the tiny SAM over synthetic/real ratios (Hydra multirun)",
        "fetalgen-finetune",
        ["-m", "experiment=demo/finetune", f"data.split_file={split}", f"data.synthetic_dir={synthetic}",
         f"data.synthetic_ratio={args.ratios}", f"seed={args.seeds}", f"trainer.max_steps={args.sam_steps}",
         f"trainer.val_check_interval={min(50, args.sam_steps)}",
         f"logger={args.logger}", f"hydra.sweep.dir={sweep}", *common],
        logs,
    )  # fmt: skip
    print("==> 4/4 report", flush=True)
    report = write_report(out, sweep, synthetic, timings)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Report: {report}")
    return report


if __name__ == "__main__":
    main()
