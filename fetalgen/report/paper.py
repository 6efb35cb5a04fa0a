"""The paper's outputs from the reproduce-paper sweeps: tables beside the published figures, four-panel chart.

Runs are grouped by training cohort (the ``data`` override), arm and N_real; Dice is summarised over seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fetalgen.report.aggregate import collect_runs, format_mean_std, markdown_table, spread, summarise
from fetalgen.report.plots import plot_panels

# Wang et al. 2025 (arXiv 2506.23664): the headline Dice of SAM fine-tuned with synthetic pairs and few real
# images. Only these two figures are quoted here; the paper's per-N_real values are in its figures.
PUBLISHED_DICE = {"spanish": 0.9466, "african": 0.9438}
ARMS = ("real", "synthetic", "weak", "strong")
GROUP = ["data", "arm", "data.num_real"]
_TEST_DICE = re.compile(r"^test/([^/]+)/dice$")


def evaluated_sets(runs: pd.DataFrame) -> list[str]:
    """Names of the test sets the runs were evaluated on (``test/<set>/dice`` columns)."""
    return sorted(m.group(1) for c in runs.columns if (m := _TEST_DICE.match(c)))


def paper_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over seeds of every test set's Dice and baseline Dice per (training cohort, arm, N_real)."""
    metrics = []
    for name in evaluated_sets(runs):
        for m in (f"test/{name}/dice", f"test/{name}/baseline_dice"):
            metrics += [m, f"{m}_std"]
    return summarise(runs, GROUP, metrics)


def paper_table(summary: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per (training cohort, arm, N_real); per test set SAM Dice and box-ellipse Dice (mean ± std, %)."""
    table = summary[[g for g in GROUP if g in summary.columns]].rename(
        columns={"data": "train cohort", "data.num_real": "N_real"}
    )
    for name in names:
        dice, base = f"test/{name}/dice", f"test/{name}/baseline_dice"
        if f"{dice}_mean" not in summary.columns:
            continue
        table[f"{name} Dice"] = [
            format_mean_std(r[f"{dice}_mean"], spread(r, dice)) for _, r in summary.iterrows()
        ]
        table[f"{name} box-ellipse"] = [
            format_mean_std(r[f"{base}_mean"], spread(r, base)) for _, r in summary.iterrows()
        ]
        table[f"{name} runs"] = summary[f"{dice}_n"].fillna(0).astype(int).values
    return table


def published_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our best 'w/ synthesis' Dice per test set beside the published headline figure (where one exists)."""
    rows = []
    synth = summary[summary["arm"] == "synthetic"] if "arm" in summary.columns else summary.iloc[0:0]
    for name, published in PUBLISHED_DICE.items():
        column = f"test/{name}/dice_mean"
        if column in synth.columns and synth[column].notna().any():
            best = synth.loc[synth[column].idxmax()]
            ours = format_mean_std(best[column], spread(best, f"test/{name}/dice"))
            where = f"{best.get('data', '?')}, N_real={best.get('data.num_real', '?')}"
        else:
            ours, where = "–", "test set absent"
        rows.append({"test set": name, "published (Wang et al. 2025)": f"{published * 100:.2f}", "ours": ours,
                     "ours: training cohort, N_real": where})  # fmt: skip
    return pd.DataFrame(rows)


def write_paper_results(sweep_root: str | Path, out_dir: str | Path) -> Path:
    """Collect the sweeps below ``sweep_root`` and write tables (CSV + Markdown) and the four-panel chart.

    Returns:
        The path of ``results.md`` in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(sweep_root)
    runs.to_csv(out / "runs.csv", index=False)
    summary = paper_summary(runs)
    summary.to_csv(out / "summary.csv", index=False)
    names = evaluated_sets(runs)
    table = paper_table(summary, names)
    table.to_csv(out / "table.csv", index=False)
    published = published_comparison(summary)
    published.to_csv(out / "published.csv", index=False)

    panels = []
    for cohort in sorted(summary["data"].dropna().unique()) if "data" in summary else []:
        part = summary[summary["data"] == cohort]
        for name in names:
            if part[f"test/{name}/dice_mean"].notna().any():
                panels.append(
                    (f"train {cohort} → test {name}", part, f"test/{name}/dice", f"test/{name}/baseline_dice")
                )
    chart = out / "dice_vs_nreal.png"
    if panels:
        plot_panels(panels, x="data.num_real", hue="arm", out=chart)

    failed = runs[runs["status"] != "ok"]
    lines = [
        "# Reproduction of Wang et al. 2025: SAM fine-tuned on real + synthetic fetal-head pairs",
        "",
        f"{len(runs) - len(failed)} runs finished, {len(failed)} failed"
        + (f" ({', '.join(failed['run_dir'])})" if len(failed) else "")
        + ".",
        f"Test sets: {', '.join(names) if names else 'none'}. Dice in %, mean ± std over seeds (one seed: over "
        "box-jitter repetitions); the box-ellipse baseline is scored on exactly the same prompts.",
        "",
        "## Published headline figures beside ours",
        "",
        markdown_table(published),
        "## All runs",
        "",
        markdown_table(table),
    ]
    if panels:
        lines += ["## Dice against N_real", "", f"![Dice against N_real]({chart.name})", ""]
    report = out / "results.md"
    report.write_text("\n".join(lines) + "\n")
    return report
