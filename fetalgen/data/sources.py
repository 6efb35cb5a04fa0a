"""Evaluation and reference sets: a config of the ``eval_data`` group (``conf/eval_data/``) names its reader as the
``source`` of a ``conf/data`` config does (``_target_`` and its arguments), plus a name, the working size and what
to do with a bad pair. They are the test sets of ``fetalgen-finetune``, ``fetalgen-evaluate``'s data and the
held-out images of ``fetalgen-sample``'s fidelity figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetalgen.data.cases import Case
from fetalgen.data.dataset import PairDataset


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
