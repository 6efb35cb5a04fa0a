"""Build a report (CSV, Markdown, PNG charts) from any directory of runs, e.g. a Hydra multirun."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from fetalgen.report.aggregate import collect_runs, markdown_table, mean_std_table, summarise
from fetalgen.report.plots import plot_metric

log = logging.getLogger(__name__)

_DICE = re.compile(r"^(val|test/[^/]+)/dice$")
# Settings preferred on the x axis, then as line colour, in this order.
_AXES = ("data.num_real", "data.synthetic_ratio", "data.num_synthetic", "arm", "data.augment")


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """Settings (not metrics, not the seed) that take more than one value across the runs."""
    skip = {"run_dir", "status", "seed"}
    out = []
    for col in runs.columns:
        if col in skip or "/" in col:
            continue
        if runs[col].astype(str).nunique(dropna=False) > 1:
            out.append(col)
    return out


def build_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Collect every run below ``root``, summarise over seeds and write ``report.md`` with tables and charts.

    Returns:
        The path of ``report.md`` (in ``out_dir``, default ``<root>/report``).
    """
    root = Path(root)
    out = Path(out_dir) if out_dir else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(root)
    runs.to_csv(out / "runs.csv", index=False)
    by = varying_settings(runs)
    metrics = sorted(c for c in runs.columns if c.startswith(("val/", "test/")))
    summary = summarise(runs, by, metrics)
    summary.to_csv(out / "summary.csv", index=False)

    dice_metrics = [m for m in metrics if _DICE.match(m)]
    lines = [
        f"# Report: {root}",
        "",
        f"{(runs['status'] == 'ok').sum()} runs finished, {(runs['status'] != 'ok').sum()} failed"
        + (
            f" (failed: {', '.join(runs.loc[runs['status'] != 'ok', 'run_dir'])})"
            if (runs["status"] != "ok").any()
            else ""
        )
        + ".",
        f"Settings that vary: {', '.join(by) if by else 'none'}. Dice in %, mean ± sample std; `± over` says "
        "whether a row's std is over seeds or, for a single seed, over box-jitter repetitions.",
        "",
    ]
    columns = {}
    for m in dice_metrics:
        columns |= {m: m, m.replace("/dice", "/baseline_dice"): m.replace("/dice", "/baseline_dice")}
    table = mean_std_table(summary, columns, {b: b for b in by})
    table.to_csv(out / "table.csv", index=False)
    lines += ["## Dice", "", markdown_table(table), ""]

    x = next((a for a in _AXES if a in by), by[0] if by else None)
    hue = next((a for a in _AXES if a in by and a != x), None)
    if x is not None:
        lines += ["## Charts", ""]
        for m in dice_metrics:
            base = m.replace("/dice", "/baseline_dice")
            name = m.replace("/", "_") + ".png"
            logx = x == "data.num_real" and summary[x].astype(float).min() > 0
            plot_metric(summary, x, m, out / name, hue=hue, baseline=base, logx=logx)
            lines += [f"![{m}]({name})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    log.info("Report written to %s", report)
    return report
