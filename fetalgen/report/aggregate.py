"""Collect the ``metrics.json`` of every run below a directory and summarise them over seeds.

A run directory is any directory holding ``metrics.json``; its Hydra ``.hydra/config.yaml`` and
``.hydra/overrides.yaml`` (written by Hydra beside it) give the settings. Runs that started but wrote no
metrics (a crashed job of a multirun) are kept with ``status = "failed"``, never dropped silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

METRICS_FILE = "metrics.json"

# Config keys every row carries (where the run's config has them), so runs can be grouped without overrides.
SETTING_KEYS = (
    "task_name",
    "seed",
    "arm",
    "generator_recipe",
    "data.num_real",
    "data.synthetic_ratio",
    "data.num_synthetic",
    "data.augment",
    "trainer.precision",
)


def _select(cfg: Any, dotted: str) -> Any:
    """The value at ``dotted`` of a plain (never resolved) config: a run folder's ``${oc.env:...}`` stays text, so
    a report reads nothing from the environment of whoever builds it."""
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def _read_run(run_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"run_dir": str(run_dir)}
    hydra_dir = run_dir / ".hydra"
    if (hydra_dir / "config.yaml").is_file():
        cfg = yaml.safe_load((hydra_dir / "config.yaml").read_text())
        for key in SETTING_KEYS:
            value = _select(cfg, key)
            if value is not None:
                row[key] = value
    if (hydra_dir / "overrides.yaml").is_file():
        for item in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            row.setdefault(key, _parse_scalar(value))
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        row.update({k: v for k, v in _flatten(metrics).items() if _is_number(v)})
        row["status"] = "ok"
    else:
        row["status"] = "failed"
    return row


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}/"))
        else:
            out[key] = v
    return out


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per run below ``root``: its settings, its numeric metrics and ``status`` (ok | failed).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no run at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory (give a Hydra multirun directory)")
    run_dirs = {p.parent for p in root.rglob(METRICS_FILE)}
    run_dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    if not run_dirs:
        raise FileNotFoundError(
            f"{root}: no run found (no {METRICS_FILE} and no .hydra/config.yaml below it)"
        )
    rows = [_read_run(d) for d in sorted(run_dirs)]
    for row in rows:  # arms with pairs of a named generator variant are told apart by it
        if row.get("arm") and row.get("generator_recipe") and row.get("data/num_synthetic", 0) > 0:
            row["arm"] = f"{row['arm']}[{row['generator_recipe']}]"
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; 0 for one run) and count of ``metrics`` per group of ``by``.

    Failed runs are left out of the statistics but counted in ``n_failed``.
    """
    by = [b for b in by if b in runs.columns]
    metrics = [m for m in metrics if m in runs.columns]
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        raise ValueError("no successful run to summarise: every run failed (see the run logs)")
    grouped = ok.groupby(by, dropna=False) if by else ok.groupby(lambda _: 0)
    stats = grouped[metrics].agg(["mean", "std", "count"])
    stats.columns = [f"{m}_{s}" if s != "count" else f"{m}_n" for m, s in stats.columns]
    for m in metrics:
        stats[f"{m}_std"] = stats[f"{m}_std"].fillna(0.0)
    failed = runs[runs["status"] != "ok"]
    if by:
        n_failed = failed.groupby(by, dropna=False).size() if not failed.empty else 0
        stats["n_failed"] = n_failed if isinstance(n_failed, int) else n_failed.reindex(stats.index).fillna(0)
        stats["n_failed"] = stats["n_failed"].astype(int)
        return stats.reset_index()
    stats["n_failed"] = len(failed)
    return stats.reset_index(drop=True)


def spread(row: pd.Series, metric: str) -> tuple[float, str]:
    """The std to show beside ``<metric>_mean`` of a :func:`summarise` row, and what it is over. Both are sample
    stds (ddof=1): over the seeds when the group has several runs (``"3 seeds"``), else over the single run's
    box-jitter repetitions (``<metric>_std`` in its metrics, which :func:`summarise` turns into
    ``<metric>_std_mean``: ``"repetitions of 1 seed"``), else 0 (``"1 run"``)."""
    n = int(row.get(f"{metric}_n", 0) or 0)
    if n > 1:
        return float(row[f"{metric}_std"]), f"{n} seeds"
    own = row.get(f"{metric}_std_mean")
    if own is None or pd.isna(own):
        return 0.0, "1 run"
    return float(own), "repetitions of 1 seed"


def mean_std_table(
    summary: pd.DataFrame, columns: Mapping[str, str], settings: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The table of every report: the ``settings`` columns of ``summary`` (``{column: label}``), one
    ``mean ± std`` column per ``{label: metric}`` of ``columns`` (Dice in %), and ``± over``: what each row's
    std is over (:func:`spread`), so a table never mixes two kinds of spread silently."""
    settings = {k: v for k, v in (settings or {}).items() if k in summary.columns}
    table = summary[list(settings)].rename(columns=settings).reset_index(drop=True)
    over: list[set[str]] = [set() for _ in range(len(summary))]
    for label, metric in columns.items():
        if f"{metric}_mean" not in summary.columns:
            continue
        cells = []
        for i, (_, row) in enumerate(summary.iterrows()):
            std, what = spread(row, metric)
            cells.append(format_mean_std(row[f"{metric}_mean"], std))
            over[i].add(what)
        table[label] = cells
    table["± over"] = [" / ".join(sorted(s)) for s in over]
    return table


def format_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """``"94.66 ± 0.31"`` (Dice as a percentage by default); ``"–"`` for a missing value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of a small frame (no extra dependency)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)
