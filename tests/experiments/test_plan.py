"""make reproduce-paper DRY_RUN=1: the plan of the paper preset, and a GPU-hours estimate from gpu.py's figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def dry_run(*args: str) -> str:
    done = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--preset", "paper", "--dry-run", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_plan_counts_runs_steps_and_images_and_asks_for_gpu_figures(tmp_path: Path):
    out = dry_run("--gpu-figures", str(tmp_path / "none.json"))
    # 7 N_real x 4 arms x 3 seeds x 2 cohorts + 4 x 3 matched + 3 reference = 183 runs of 4000 steps
    assert "SAM fine-tuning (183 runs x 4000 steps, batch 8): 5,856,000 decoder images" in out
    assert "diffusion training (13 generators x 60000 steps, 256 px): 780,000 steps" in out
    assert "no GPU figures" in out and "GPU-h" not in out


def test_with_gpu_figures_the_plan_estimates_gpu_hours(tmp_path: Path):
    rows = [{"what": "diffusion paper (256 px) train, batch 16", "precision": "bf16", "rate": 10.0},
            {"what": "sampling paper, sde-dpmsolver++ 20 steps, batch 32", "precision": "fp32", "rate": 20.0},
            {"what": "SAM vit_b decoder train, batch 8, batched", "precision": "fp32", "rate": 800.0},
            {"what": "SAM vit_b encoder 1024 px, batch 4", "precision": "bf16", "rate": 40.0}]  # fmt: skip
    figures = tmp_path / "gpu.json"
    figures.write_text(json.dumps({"device": "Test Card", "rows": rows}))
    out = dry_run("--gpu-figures", str(figures), "--skip", "matched,reference", "--seeds", "0")
    # 1 generator x 60000 steps at 10 steps/s = 1.67 h; 7 x 4 x 1 x 2 = 56 runs x 4000 x 8 / 800 / 3600 = 0.62 h
    assert "780,000" not in out and "60,000 steps  ~1.67 GPU-h" in out
    assert "SAM fine-tuning (56 runs x 4000 steps, batch 8): 1,792,000 decoder images  ~0.62 GPU-h" in out
    assert "GPU-hours on Test Card" in out


def test_the_cpu_plan_counts_the_zero_shot_evaluations():
    done = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--preset", "cpu", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # 3 N_real x 2 arms x 3 seeds + 3 matched + 3 reference + 2 self-training arms x 3 seeds = 30 trained runs;
    # zero-shot: one evaluation per seed
    assert "SAM fine-tuning (30 runs x 150 steps, batch 4; + 3 zero-shot evaluations)" in done.stdout
    skipped = subprocess.run([sys.executable, "experiments/reproduce_paper.py", "--preset", "cpu", "--dry-run",
                              "--skip", "pseudo"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "SAM fine-tuning (24 runs x 150 steps" in skipped.stdout
