"""``make reproduce-paper [PRESET=cpu|paper]``: the protocol of Wang et al. 2025 end to end, as one command.

1. train the joint diffusion on 20 HC18 pairs per trimester (60 in all; trimester from head circumference);
2. sample the synthetic pairs with QC (495 in the paper);
3. fine-tune SAM for each training cohort (HC18, Spanish where present) and each N_real, in four arms
   (real only, real + all synthetic pairs that passed QC, weak and strong augmentation), over the seeds;
4. evaluate every run on the test sets (HC18 held-out split, Spanish and African where present) with
   box-jitter repetitions, beside the box-ellipse baseline on the same prompts;
5. write results/: tables (CSV + Markdown, with the published figures beside ours) and the four-panel chart.

PRESET=paper is the full protocol for a GPU machine (SAM ViT-B from `make weights`); PRESET=cpu runs the
same steps at small scale (tiny models, 32/64 px, a shorter N_real grid, fewer epochs) on 2 CPU cores.

    python experiments/reproduce_paper.py --preset cpu [--out outputs/reproduce-paper] [--results results]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import StepFailed, run_step

from fetalgen.report.paper import ARMS, write_paper_results


@dataclass(frozen=True)
class Preset:
    """The scale of one reproduction."""

    experiment: str  # conf/experiment/<experiment>/{diffusion,finetune}.yaml
    num_real: tuple[int, ...]
    seeds: tuple[int, ...]
    n_synthetic: int
    sample_steps: int
    needs_weights: bool
    diffusion: tuple[str, ...] = ()  # further overrides of each step
    finetune: tuple[str, ...] = ()
    arms: tuple[str, ...] = ARMS
    logger: str = "wandb"


PRESETS = {
    "paper": Preset("paper", (5, 10, 20, 50, 100, 300, 500), (0, 1, 2), 495, 25, needs_weights=True),
    "cpu": Preset("cpu", (5, 10, 20, 50), (0,), 120, 20, needs_weights=False),
    # A shrunken run of every step for the tests (minutes): few steps, one N_real, no W&B.
    "smoke": Preset(
        "cpu",
        (3,),
        (0,),
        6,
        4,
        needs_weights=False,
        logger="csv",
        diffusion=("trainer.max_steps=10", "data.num_val=3", "callbacks.sample_grid.every_n_steps=0"),
        finetune=("trainer.max_epochs=1", "data.num_val=4", "data.num_test=8", "eval.repetitions=2"),
    ),  # fmt: skip
}


@dataclass
class Cohorts:
    """Which data is present; what is absent is said, never silently skipped."""

    hc18: Path
    spanish: Path
    african: Path
    notes: list[str] = field(default_factory=list)

    @classmethod
    def find(cls, data_dir: Path) -> Cohorts:
        env = os.environ.get
        return cls(
            hc18=Path(env("FETALGEN_HC18_DIR", data_dir / "hc18")),
            spanish=Path(env("FETALGEN_SPANISH_DIR", data_dir / "spanish")),
            african=Path(env("FETALGEN_AFRICAN_DIR", data_dir / "african")),
        )

    def check(self, preset: Preset, checkpoint: Path) -> list[str]:
        """Training cohorts to sweep; stops early (SystemExit) with the fix when required data is missing."""
        if not (self.hc18 / "training_set").is_dir():
            sys.exit(
                f"HC18 not found at {self.hc18} (no training_set/ there).\n"
                "Fix: `make data` (downloads Zenodo record 1327317 into data/hc18) or set FETALGEN_HC18_DIR."
            )
        if preset.needs_weights and not checkpoint.is_file():
            sys.exit(f"SAM ViT-B weights not found at {checkpoint}.\nFix: `make weights`.")
        cohorts = ["hc18"]
        if (self.spanish / "train").is_dir() and (self.spanish / "test").is_dir():
            cohorts.append("spanish")
        else:
            self.notes.append(
                f"Spanish cohort ABSENT at {self.spanish} (needs train/ and test/ in the images/ + masks/ layout; "
                "set FETALGEN_SPANISH_DIR): no Spanish training cohort and no Spanish test set."
            )
        if not self.african.is_dir():
            self.notes.append(
                f"African cohort ABSENT at {self.african} (images/ + masks/; set FETALGEN_AFRICAN_DIR): "
                "no African test set."
            )
        if len(cohorts) == 1:
            self.notes.append("Training on HC18 alone; evaluation on the held-out HC18 test split.")
        return cohorts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="scale of the reproduction")
    parser.add_argument(
        "--out", type=Path, default=None, help="runs (default outputs/reproduce-paper-<preset>)"
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="tables and chart")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    out = (args.out or Path(f"outputs/reproduce-paper-{args.preset}")).resolve()
    data_dir = Path(os.environ.get("FETALGEN_DATA_DIR", "data")).resolve()
    checkpoint = Path(os.environ.get("FETALGEN_CHECKPOINT_DIR", "checkpoints")) / "sam_vit_b_01ec64.pth"
    found = Cohorts.find(data_dir)
    cohorts = found.check(preset, checkpoint)
    for note in found.notes:
        print(f"NOTE: {note}", flush=True)
    seeds = args.seeds or ",".join(map(str, preset.seeds))
    logs, diffusion, synthetic = out / "logs", out / "diffusion", out / "synthetic"
    common = [f"paths.log_dir={logs}", f"paths.data_dir={data_dir}"]
    start = time.perf_counter()

    run_step(
        "1/5 joint diffusion on 20 HC18 pairs per trimester",
        "fetalgen-train-diffusion",
        [f"experiment={preset.experiment}/diffusion", f"logger={preset.logger}", f"hydra.run.dir={diffusion}",
         *preset.diffusion, *common],
        logs,
    )  # fmt: skip
    run_step(
        f"2/5 sample {preset.n_synthetic} synthetic pairs with QC",
        "fetalgen-sample",
        [f"ckpt_path={diffusion / 'checkpoints' / 'last.ckpt'}", f"n={preset.n_synthetic}",
         f"steps={preset.sample_steps}", f"out={synthetic}", f"hydra.run.dir={out / 'sample'}", *common],
        logs,
    )  # fmt: skip
    failed_sweeps = []
    for cohort in cohorts:
        cohort_args = ["data.num_test=0"] if cohort == "spanish" else []  # its test set is <spanish_dir>/test
        try:
            run_step(
                f"3-4/5 fine-tune and evaluate SAM, training cohort {cohort}: N_real x arms x seeds",
                "fetalgen-finetune",
                ["-m", f"experiment={preset.experiment}/finetune", f"data={cohort}",
                 f"data.num_real={','.join(map(str, preset.num_real))}", f"arm={','.join(preset.arms)}",
                 f"seed={seeds}", f"data.synthetic_dir={synthetic}", f"logger={preset.logger}",
                 f"hydra.sweep.dir={out / 'sweep' / cohort}", *cohort_args, *preset.finetune, *common],
                logs,
            )  # fmt: skip
        except StepFailed as err:  # a failed job does not stop the others; the results list it
            failed_sweeps.append(cohort)
            print(f"    some runs failed: {str(err).splitlines()[0]}", flush=True)
    print("==> 5/5 results", flush=True)
    report = write_paper_results(out / "sweep", args.results)
    notes = "\n".join(f"- {n}" for n in found.notes)
    if notes:
        report.write_text(report.read_text() + f"\n## Data notes\n\n{notes}\n")
    print(f"\nReproduction ({args.preset}) finished in {(time.perf_counter() - start) / 60:.1f} min. "
          f"Results: {report}")  # fmt: skip
    if failed_sweeps:
        print(f"Some runs failed in: {', '.join(failed_sweeps)} (see results.md and {logs})")
    return report


if __name__ == "__main__":
    main()
