"""The LightningDataModule: subject-wise real splits, synthetic pairs mixed into training only."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader

from fetalgen.data.cases import Case
from fetalgen.data.dataset import IMAGES, PAIRS, ImageDataset, PairDataset, seed_worker
from fetalgen.data.hc18 import trimester_from_hc
from fetalgen.data.order import EpochShuffle, ResumableLoader
from fetalgen.data.provenance import Record, case_records, check_no_leak, read_synthetic_provenance
from fetalgen.data.sources import EvalSet
from fetalgen.data.splits import (
    holdout_split,
    read_case_list,
    read_split_file,
    select_cases,
    split_by_subject,
)
from fetalgen.data.synthetic import read_synthetic, set_roots
from fetalgen.utils.seeds import seeded_rng, torch_generator

log = logging.getLogger(__name__)

NO_MASK = Path("<unlabelled: no mask>")  # the mask path of an unlabelled image: reading it fails, naming why


def choose_subjects(cases: list[Case], n: int, seed: int) -> list[Case]:
    """``n`` images out of ``cases`` taken as whole subjects, chosen by ``seed`` (sorted by name)."""
    return split_by_subject(cases, {"chosen": n}, seed)["chosen"]


def choose_per_trimester(cases: list[Case], n: int, seed: int) -> list[Case]:
    """``n`` images, ``n / 3`` from each trimester (from the head circumference), as whole subjects.

    This is the paper's selection for the diffusion model (20 HC18 pairs per trimester, 60 in all).
    """
    if n % 3:
        raise ValueError(f"num_real={n} cannot be split evenly over 3 trimesters")
    groups: dict[int, list[Case]] = {0: [], 1: [], 2: []}
    unknown = []
    for case in cases:
        trimester = trimester_from_hc(case.hc_mm)
        groups.get(trimester, unknown).append(case)
    if unknown:
        raise ValueError(
            f"balance_trimesters needs the head circumference of every case; {len(unknown)} have none "
            f"(e.g. {unknown[0].name})"
        )
    chosen: list[Case] = []
    for trimester, group in groups.items():
        if len(group) < n // 3:
            raise ValueError(f"trimester {trimester} has {len(group)} images, fewer than {n // 3} asked for")
        chosen += choose_subjects(group, n // 3, seed)
    return sorted(chosen, key=lambda c: c.name)


class PairDataModule(pl.LightningDataModule):
    """Real train/val/test splits of ``source`` plus synthetic pairs for training.

    The split is made at construction (``train_cases``, ``val_cases``, ``test_cases``, ``synthetic_cases``,
    ``synthetic_counts`` are there at once); images are loaded in :meth:`setup`.

    Args:
        source: all real cases (e.g. from ``read_hc18``).
        image_size: working side ``S`` in pixels.
        num_real: real training images.
        num_val: validation images.
        num_test: test images (0: no test split).
        split_file: YAML/JSON file or directory of ``train.txt``/``val.txt``/``test.txt`` case lists; used
            instead of the seeded split (``num_real`` then picks a seeded subset of its train list).
        seed: split, subset, synthetic choice and loader seed.
        augment: ``none``, ``weak`` or ``strong`` (training only).
        augment_views: with augmentation, ``K`` seeded views per training pair instead of a fresh draw every
            time (:class:`~fetalgen.data.dataset.PairDataset` ``views``): what an embedding cache can reuse.
        synthetic_dir: a synthetic dataset written by ``fetalgen-sample`` or ``fetalgen-pseudo-label``, or a list
            of them (their pairs pooled; QC-failed and unkept pairs are excluded). Its
            ``provenance.json`` must match its files and show that its generator never saw a validation or test
            case or subject (else :class:`~fetalgen.data.provenance.LeakageError`); a set without one, or with one
            that does not match, is refused (:class:`~fetalgen.data.provenance.UnverifiedSetError`).
        synthetic_ratio: synthetic pairs per real training image (``round(ratio * num_real)``).
        num_synthetic: number of synthetic pairs (overrides ``synthetic_ratio``); ``"all"``: every pair
            that passed QC (the paper's "w/ synthesis" arm).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers.
        on_bad_pair: ``raise`` or ``skip`` (with a warning) for bad files.
        balance_trimesters: take ``num_real / 3`` training images from each trimester.
        load_holdout: load the validation and test images (False: they are still held out of ``train``, but
            never read; for the generator, which is not evaluated on them).
        keep_memorised: keep synthetic pairs flagged as near-copies of a generator training image (default:
            excluded and counted in ``synthetic_counts["memorised_excluded"]``).
        mask_regions: a mask of several separate regions: ``raise`` or keep the ``largest`` (with a warning).
        min_agreement: leave out synthetic pairs whose judged image-mask agreement is below it (counted in
            ``synthetic_counts["below_agreement"]``); ``None``: no agreement filter.
        allow_unverified_synthetic: use a synthetic set whose provenance is missing or does not match its files
            (a loud warning; leakage through its generator is then not ruled out).
        unlabelled: images used *without* their masks (``unlabelled_cases``: the pseudo-labeller's and an image
            model's pool): a number (chosen by ``seed``), ``"all"``, or ``None`` (none). They come from the training
            pool left over once the labelled pairs are chosen, or from ``unlabelled_list``.
        unlabelled_list: a case list (one name a line) naming the unlabelled images among ``source`` instead; a
            validation or test image or subject among them is refused (:class:`~fetalgen.data.provenance.
            LeakageError`), a labelled one left out.

    Batches are dicts as in :class:`~fetalgen.data.dataset.PairDataset`.
    """

    def __init__(
        self,
        source: list[Case],
        image_size: int,
        num_real: int,
        num_val: int,
        num_test: int = 0,
        split_file: str | Path | None = None,
        seed: int = 0,
        augment: str = "none",
        augment_views: int | None = None,
        synthetic_dir: str | Path | list[str | Path] | None = None,
        synthetic_ratio: float = 0.0,
        num_synthetic: int | str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        on_bad_pair: str = "raise",
        balance_trimesters: bool = False,
        load_holdout: bool = True,
        keep_memorised: bool = False,
        mask_regions: str = "raise",
        allow_unverified_synthetic: bool = False,
        min_agreement: float | None = None,
        unlabelled: int | str | None = None,
        unlabelled_list: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.min_agreement = None if min_agreement is None else float(min_agreement)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.augment = augment
        self.augment_views = augment_views
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.on_bad_pair = on_bad_pair
        self.keep_memorised = bool(keep_memorised)
        self.mask_regions = mask_regions
        self.allow_unverified_synthetic = bool(allow_unverified_synthetic)
        self.reader_skipped: list = list(getattr(source, "skipped", []))  # bad files the reader skipped
        source = list(source)
        choose = choose_per_trimester if balance_trimesters else choose_subjects
        if split_file is not None:
            pool = self._split_from_file(source, split_file, num_real, choose)
        else:
            # Test and val first, train from the rest: changing num_real leaves val/test unchanged.
            parts = holdout_split(source, num_val, num_test, self.seed)
            if num_real > len(parts["train"]):
                raise ValueError(
                    f"num_real={num_real} + num_val={num_val} + num_test={num_test} exceed the "
                    f"{len(source)} real images"
                )
            self.train_cases = choose(parts["train"], num_real, self.seed)
            self.val_cases, self.test_cases = parts["val"], parts["test"]
            pool = parts["train"]
            if num_test and load_holdout:
                log.warning(
                    "no data.split_file: the validation and test cases are drawn with seed=%d, so runs of other "
                    "seeds are tested on other images (a seed sweep is then no paired comparison); split once with "
                    "fetalgen-split and give its folder as data.split_file", self.seed,
                )  # fmt: skip
        if unlabelled_list is not None:
            pool = select_cases(source, read_case_list(unlabelled_list), unlabelled_list)
        self.unlabelled_cases = self._choose_unlabelled(pool, unlabelled, unlabelled_list)
        if not load_holdout:
            self.val_cases, self.test_cases = [], []
        self.generator_cases: list[Record] | None = None  # what the synthetic pairs' generator saw
        self.synthetic_cases, self.synthetic_counts = self._choose_synthetic(
            synthetic_dir, synthetic_ratio, num_synthetic, len(self.train_cases)
        )
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None
        self.test_set: PairDataset | None = None
        self.unlabelled_set: ImageDataset | None = None
        self.unlabelled_in_batches = False  # set by a model that learns from images without masks

    def _split_from_file(
        self, source: list[Case], split_file: str | Path, num_real: int, choose
    ) -> list[Case]:
        """The split file's validation and test cases and ``num_real`` of its training pool; returns the pool."""
        lists = read_split_file(split_file)
        train = select_cases(source, lists["train"], split_file)
        if num_real > len(train):
            raise ValueError(
                f"num_real={num_real} but the split file {split_file} lists only {len(train)} training cases"
            )
        self.train_cases = train if num_real == len(train) else choose(train, num_real, self.seed)
        self.val_cases = select_cases(source, lists["val"], split_file)
        self.test_cases = select_cases(source, lists["test"], split_file)
        return train

    def _choose_unlabelled(
        self, pool: list[Case], wanted: int | str | None, listed: str | Path | None
    ) -> list[Case]:
        """Pool images that are not labelled training pairs, their masks (and reference HC) stripped, checked
        against the held-out cases like any training image."""
        if wanted is None:
            return []
        labelled = {c.name for c in self.train_cases}
        rest = [replace(c, mask_path=NO_MASK, hc_mm=None) for c in pool if c.name not in labelled]
        if wanted != "all":
            if not (isinstance(wanted, int) and wanted >= 0):
                raise ValueError(f"data.unlabelled must be a number >= 0, 'all' or null, got {wanted!r}")
            if wanted > len(rest):
                raise ValueError(f"data.unlabelled={wanted} but the pool holds {len(rest)} unlabelled images")
            rng = seeded_rng(self.seed, 2)
            rest = sorted((rest[i] for i in rng.permutation(len(rest))[:wanted]), key=lambda c: c.name)
        check_no_leak(
            case_records(rest, labelled=False),
            {"validation": self.val_cases, "test": self.test_cases},
            model=f"a model given its unlabelled images ({listed or 'the training pool'})",
            fix="take unlabelled images from the training pool only (leave data.unlabelled_list unset)",
        )
        return rest

    def _choose_synthetic(
        self, root: str | Path | list[str | Path] | None, ratio: float, num: int | str | None, num_real: int
    ) -> tuple[list[Case], dict[str, int]]:
        wanted = None if num == "all" else int(num) if num is not None else int(round(ratio * num_real))
        if wanted is not None and wanted < 0:
            raise ValueError(f"the number of synthetic pairs must be >= 0, got {wanted}")
        if root is None or wanted == 0:
            if wanted is None:
                raise ValueError("num_synthetic=all but synthetic_dir is not set")
            if wanted:
                raise ValueError(
                    f"{wanted} synthetic pairs asked for (synthetic_ratio={ratio}, num_synthetic={num}) "
                    "but synthetic_dir is not set"
                )
            return [], {
                "total": 0,
                "kept": 0,
                "qc_failed": 0,
                "memorised": 0,
                "memorised_excluded": 0,
                "below_agreement": 0,
                "used": 0,
            }
        cases, counts = self._read_sets(set_roots(root))
        counts["memorised_excluded"] = 0 if self.keep_memorised else counts["memorised"]
        if self.keep_memorised and counts["memorised"]:
            log.warning(
                "data.keep_memorised=true: %d synthetic pair(s) flagged as near-copies of a generator training "
                "image are kept for training", counts["memorised"],
            )  # fmt: skip
        if wanted is None:
            return cases, {**counts, "used": len(cases)}
        if wanted > len(cases):
            raise ValueError(
                f"{wanted} synthetic pairs asked for but {root} has only {len(cases)} that passed QC "
                f"and the memorisation check ({counts['qc_failed']} failed QC, "
                f"{counts['memorised_excluded']} memorised excluded, {counts['below_agreement']} below "
                f"data.min_agreement, of {counts['total']})"
            )
        rng = seeded_rng(self.seed, 1)
        chosen = sorted((cases[i] for i in rng.permutation(len(cases))[:wanted]), key=lambda c: c.name)
        return chosen, {**counts, "used": len(chosen)}

    def _read_sets(self, roots: list[Path]) -> tuple[list[Case], dict[str, int]]:
        """The usable pairs of one or more sets (a synthetic and a pseudo-labelled one), their counts summed."""
        cases: list[Case] = []
        counts: dict[str, int] = {}
        for root in roots:
            self._check_generator(root)
            found, found_counts = read_synthetic(
                root, include_memorised=self.keep_memorised, min_agreement=self.min_agreement
            )
            if clash := {c.name for c in found} & {c.name for c in cases}:
                raise ValueError(f"{root} holds pairs named as another set's ({sorted(clash)[0]}, ...)")
            cases += found
            counts = {k: counts.get(k, 0) + v for k, v in found_counts.items()}
        return cases, counts

    def _check_generator(self, root: str | Path) -> None:
        """Refuse a synthetic set whose generator saw a validation or test case (or subject) of this split."""
        provenance = read_synthetic_provenance(root, self.allow_unverified_synthetic)
        if provenance is None:
            return
        self.generator_cases = (self.generator_cases or []) + provenance["training_cases"]
        check_no_leak(
            provenance["training_cases"],
            {"validation": self.val_cases, "test": self.test_cases},
            model=f"the generator of the synthetic set {root}",
            fix="split once (fetalgen-split) and give the same data.split_file to fetalgen-train-diffusion "
            "and fetalgen-finetune, then re-train the generator and re-sample",
        )

    def setup(self, stage: str | None = None) -> None:
        """Load, validate and resize the pairs (once)."""
        if self.train_set is None:
            self.train_set = PairDataset(
                self.train_cases + self.synthetic_cases,
                self.image_size,
                self.augment,
                self.on_bad_pair,
                seed=self.seed,
                mask_regions=self.mask_regions,
                views=self.augment_views,
            )
            held = {"on_bad_pair": self.on_bad_pair, "mask_regions": self.mask_regions}
            self.val_set = PairDataset(self.val_cases, self.image_size, "none", **held)
            self.test_set = PairDataset(self.test_cases, self.image_size, "none", **held)

    def test_split(self) -> list[EvalSet]:
        """The test split as an evaluation set named by its cohort (none when it is empty), loaded."""
        if not self.test_cases:
            return []
        self.setup("test")  # loads the splits once; fit reuses them
        cohort = self.test_cases[0].cohort or "test"
        return [EvalSet(cohort, self.test_set, where="the test split of the training data")]

    def skipped(self) -> list[str]:
        """Every bad file skipped (``on_bad_pair=skip``) by the reader and, once loaded, by the datasets."""
        errors = list(self.reader_skipped)
        for dataset in (self.train_set, self.val_set, self.test_set, self.unlabelled_set):
            errors += dataset.skipped if dataset is not None else []
        return [str(e) for e in errors]

    def _loader(self, dataset: PairDataset, shuffle: bool, offset: int) -> DataLoader:
        """Training (``shuffle``): ordered by ``(seed, epoch)`` and resumable mid-epoch (:mod:`~fetalgen.data.order`)."""
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            generator=torch_generator(self.seed, offset),
            worker_init_fn=seed_worker,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The training pairs; with :attr:`unlabelled_in_batches` (a generator's image model), each batch a dict
        of ``pairs`` and as many ``images`` without masks (an epoch is one pass over the pairs; the images are
        drawn afresh every epoch)."""
        self.setup("fit")
        pairs = self._loader(self.train_set, shuffle=True, offset=0)
        if not self.unlabelled_in_batches:
            return pairs
        return CombinedLoader({PAIRS: pairs, IMAGES: self.unlabelled_dataloader()}, mode="min_size")

    def unlabelled_dataloader(self) -> DataLoader:
        """The unlabelled images (``unlabelled_cases``, read once at ``image_size``), shuffled by ``seed`` like
        the training pairs: what a generator learns the image from."""
        if self.unlabelled_set is None:
            self.unlabelled_set = ImageDataset(self.unlabelled_cases, self.image_size, self.on_bad_pair)
        if not len(self.unlabelled_set):
            raise ValueError(
                "no unlabelled image to read (data.unlabelled is unset or 0, or every one was bad)"
            )
        return self._loader(self.unlabelled_set, shuffle=True, offset=3)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self.val_set, shuffle=False, offset=1) if len(self.val_set) else []

    def test_dataloader(self) -> DataLoader | list:
        self.setup("test")
        return self._loader(self.test_set, shuffle=False, offset=2) if len(self.test_set) else []
