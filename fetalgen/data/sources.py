"""Evaluation and reference sets named by a small spec (``{kind, root, list_file, name, n, on_bad_pair}``): the
test sets of ``fetalgen-finetune``, ``fetalgen-evaluate``'s data and the held-out images of ``fetalgen-sample``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fetalgen.data.cases import Case

log = logging.getLogger(__name__)

DATA_KINDS = ("hc18", "folder", "synthetic", "phantom")


def read_cases(spec: Mapping[str, Any]) -> list[Case]:
    """The cases of an evaluation set ``{kind, root, list_file, name, n}``.

    ``kind``: ``hc18`` (official layout, optionally a split through ``list_file``), ``folder`` (images/ +
    masks/, e.g. the Spanish and African cohorts), ``synthetic`` (a ``fetalgen-sample`` output, QC-failed
    pairs excluded and counted) or ``phantom`` (``n`` phantom pairs, written at ``root`` if absent).
    """
    from fetalgen.data.folder import read_folder
    from fetalgen.data.hc18 import read_hc18
    from fetalgen.data.phantom import phantom_cases
    from fetalgen.data.synthetic import read_synthetic

    kind, root, list_file = spec["kind"], spec["root"], spec.get("list_file")
    on_bad = spec.get("on_bad_pair") or "raise"  # one setting: a missing mask or CSV row is a bad pair too
    if kind == "hc18":
        return read_hc18(root, list_file=list_file, on_bad=on_bad)
    if kind == "folder":
        return read_folder(root, list_file=list_file, cohort=spec.get("name") or "folder", on_bad=on_bad)
    if kind == "synthetic":
        cases, counts = read_synthetic(root)
        log.info("synthetic set %s: %s (QC-failed pairs excluded)", root, counts)
        return cases
    if kind == "phantom":
        return phantom_cases(root, n=int(spec.get("n") or 64), seed=int(spec.get("seed") or 0))
    raise ValueError(f"unknown eval data kind {kind!r}; choose one of {', '.join(DATA_KINDS)}")
