"""Evaluation and reference sets: a config of the ``eval_data`` group (``conf/eval_data/``) names its reader as the
``source`` of a ``conf/data`` config does (``_target_`` and its arguments), plus a name, the working size and what
to do with a bad pair. They are the test sets of ``fetalgen-finetune``, ``fetalgen-evaluate``'s data and the
held-out images of ``fetalgen-sample``'s fidelity figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import hydra

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


def source_root(spec: Mapping[str, Any]) -> str | None:
    """The folder an ``eval_data`` config reads (None for a reader without one)."""
    root = (spec.get("source") or {}).get("root")
    return None if root is None else str(root)


def load_eval_set(spec: Mapping[str, Any], image_size: int) -> EvalSet:
    """Read and load the set an ``eval_data`` config names: ``{name, image_size, on_bad_pair, source}``.

    Args:
        spec: the config (``source`` is instantiated: ``_target_`` returns the cases).
        image_size: the working side when the config leaves ``image_size`` null (the model's).
    """
    if "source" not in spec or "_target_" not in (spec.get("source") or {}):
        raise ValueError(
            f"an evaluation set needs a source with a _target_ (a reader, see conf/eval_data/), got {dict(spec)}"
        )
    cases = hydra.utils.instantiate(spec["source"], _convert_="all")
    size = int(spec.get("image_size") or image_size)
    name = spec.get("name") or "eval"
    return EvalSet.of(name, cases, size, spec.get("on_bad_pair") or "raise", source_root(spec) or "")
