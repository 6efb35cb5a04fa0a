"""Evaluation and reference sets: a config of the ``eval_data`` group (``conf/eval_data/``) builds an
:class:`EvalSource` (its reader as a partial ``source``, a name, the working size, what to do with a bad pair);
:meth:`EvalSource.load` reads it into an :class:`EvalSet`. They are the test sets of ``fetalgen-finetune``,
``fetalgen-evaluate``'s data and the held-out and reference pairs of ``fetalgen-sample``'s judge."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fetalgen.data.cases import Case
from fetalgen.data.dataset import PairDataset

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """A named set of pairs, loaded at the working size (unaugmented), with every bad file it skipped."""

    name: str
    dataset: PairDataset
    skipped: list[str] = field(default_factory=list)
    where: str = ""  # where it was read (a folder), for the summaries

    @classmethod
    def of(
        cls, name: str, cases: list[Case], image_size: int, on_bad_pair: str = "raise", where: str = ""
    ) -> EvalSet:
        """Load ``cases``; the reader's skipped files (a ``CaseList``) and the dataset's are both listed."""
        dataset = PairDataset(cases, int(image_size), "none", on_bad_pair)
        skipped = [str(e) for e in [*getattr(cases, "skipped", []), *dataset.skipped]]
        return cls(name, dataset, skipped, where)

    @property
    def cases(self) -> list[Case]:
        return self.dataset.cases


@dataclass(frozen=True)
class EvalSource:
    """An evaluation set as configured, not yet read.

    Attributes:
        name: label of its outputs and metrics (``eval/<name>/...``, ``test/<name>/...``).
        source: the reader (a partial: ``source()`` returns the cases), e.g. ``read_hc18`` with its root.
        image_size: the working side; None: the caller's (the model's).
        on_bad_pair: ``raise`` or ``skip`` (skipped pairs are counted in :attr:`EvalSet.skipped`).
    """

    name: str
    source: Callable[[], list[Case]]
    image_size: int | None = None
    on_bad_pair: str = "raise"

    @property
    def root(self) -> str | None:
        """The folder the reader reads (None for a reader without one)."""
        root = getattr(self.source, "keywords", {}).get("root")
        return None if root is None else str(root)

    @property
    def list_file(self) -> str | None:
        """The case list the reader keeps to, if any."""
        listed = getattr(self.source, "keywords", {}).get("list_file")
        return None if listed is None else str(listed)

    def renamed(self, name: str) -> EvalSource:
        return dataclasses.replace(self, name=name)

    def load(self, image_size: int) -> EvalSet:
        """Read the cases and load them at ``self.image_size`` (else ``image_size``)."""
        size = int(self.image_size or image_size)
        return EvalSet.of(self.name, self.source(), size, self.on_bad_pair, self.root or "")


def load_present(sources: Mapping[str, EvalSource | None], image_size: int) -> list[EvalSet]:
    """Every set of ``sources`` (named by its key) whose root exists, loaded; a missing root is logged and skipped
    (the optional cohorts of ``fetalgen-finetune``'s ``test_sets``), a None entry dropped."""
    sets = []
    for key, source in sources.items():
        if source is None:
            continue
        if source.root is not None and not Path(source.root).exists():
            log.info(
                "test set %r skipped: %s does not exist (set its root, e.g. paths.%s_dir)",
                key,
                source.root,
                key,
            )
            continue
        sets.append(source.renamed(key).load(image_size))
    return sets
