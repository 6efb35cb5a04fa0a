"""The paper's outputs from the reproduce-paper sweeps: tables beside the published figures, four-panel chart.

Runs are grouped by training cohort (the ``data`` override), arm and N_real; Dice is summarised over seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fetalgen.report.aggregate import (
    collect_runs,
    format_mean_std,
    markdown_table,
    mean_std_table,
    spread,
    summarise,
)
from fetalgen.report.biometry import PUBLISHED_HC_MAD_MM, hc_comparison, hc_table
from fetalgen.report.paired import paired_comparison, paired_table
from fetalgen.report.plots import plot_ci_panels

# Wang et al. 2025 (arXiv 2506.23664): the headline Dice of SAM fine-tuned with synthetic pairs and few real
# images. Only these two figures are quoted here; the paper's per-N_real values are in its figures.
PUBLISHED_DICE = {"spanish": 0.9466, "african": 0.9438}
ARMS = ("real", "synthetic", "weak", "strong")  # the paper's four arms (matched, reference: see paired.py)
GROUP = ["data", "arm", "data.num_real"]
_TEST_DICE = re.compile(r"^test/([^/]+)/dice$")


def evaluated_sets(runs: pd.DataFrame) -> list[str]:
    """Names of the test sets the runs were evaluated on (``test/<set>/dice`` columns)."""
    return sorted(m.group(1) for c in runs.columns if (m := _TEST_DICE.match(c)))


def paper_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over seeds of every test set's Dice and baseline Dice per (training cohort, arm, N_real)."""
    metrics = []
    for name in evaluated_sets(runs):
        for m in (f"test/{name}/dice", f"test/{name}/ellipse_dice", f"test/{name}/baseline_dice"):
            metrics += [m, f"{m}_std"]
    return summarise(runs, GROUP, metrics)


def paper_table(summary: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per (training cohort, arm, N_real); per test set the Dice of SAM, of its masks read as their fitted
    ellipses and of the box-ellipse baseline (mean ± std, %)."""
    columns = {}
    for name in names:
        columns |= {
            f"{name} Dice": f"test/{name}/dice",
            f"{name} SAM ellipse": f"test/{name}/ellipse_dice",
            f"{name} box-ellipse": f"test/{name}/baseline_dice",
        }
    return mean_std_table(summary, columns, {"data": "train cohort", "arm": "arm", "data.num_real": "N_real"})


def published_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our best 'w/ synthesis' Dice per test set beside the published headline figure (where one exists)."""
    rows = []
    is_paper_arm = (
        summary["arm"].astype(str).str.match(r"^synthetic(\[|$)") if "arm" in summary.columns else None
    )
    synth = summary[is_paper_arm] if is_paper_arm is not None else summary.iloc[0:0]
    for name, published in PUBLISHED_DICE.items():
        column = f"test/{name}/dice_mean"
        if column in synth.columns and synth[column].notna().any():
            best = synth.loc[synth[column].idxmax()]
            std, over = spread(best, f"test/{name}/dice")
            ours = f"{format_mean_std(best[column], std)} (± over {over})"
            where = f"{best.get('data', '?')}, N_real={best.get('data.num_real', '?')}"
        else:
            ours, where = "–", "test set absent"
        rows.append({"test set": name, "published (Wang et al. 2025)": f"{published * 100:.2f}", "ours": ours,
                     "ours: training cohort, N_real": where})  # fmt: skip
    return pd.DataFrame(rows)


def introduction(runs: pd.DataFrame, names: list[str]) -> list[str]:
    """The report's opening: what ran (and failed), the test sets, and what each arm is."""
    failed = runs[runs["status"] != "ok"]
    lines = [
        "# Reproduction of Wang et al. 2025: SAM fine-tuned on real + synthetic fetal-head pairs",
        "",
        f"{len(runs) - len(failed)} runs finished, {len(failed)} failed"
        + (f" ({', '.join(failed['run_dir'])})" if len(failed) else "")
        + ".",
        f"Test sets: {', '.join(names) if names else 'none'}. Every arm trains the same number of optimizer "
        "steps; all arms of one (N_real, seed) are tested on the same images with the same jittered boxes.",
        "Arms: `real` (real pairs only), `synthetic` (+ every usable pair of the generator trained on the "
        "paper's 60 pairs), `matched` (+ pairs of a generator trained on exactly the N_real pairs SAM sees), "
        "`filtered` (matched, without the pairs whose judged image-mask agreement is below `data.min_agreement`), "
        "`weak`/`strong` (augmentation), `reference` (real only, on every label the paper's generator saw), "
        "`pseudo` (+ the unlabelled pool images the real arm's model labelled with the automatic prompt, confident "
        "masks kept), `synthetic_pseudo` (both sets); "
        "`[name]`: the generator recipe behind the pairs. Worth real labels: the real-only N_real whose Dice the "
        "arm matches, interpolated on the real-only curve (real arm and reference).",
        "",
    ]
    return lines


def test_set_sections(runs: pd.DataFrame, name: str, comparison: pd.DataFrame, out: Path) -> list[str]:
    """The Markdown of one test set (its CSVs written to ``out``): the paired comparison, the same predictions read
    as fitted ellipses, and head circumference in mm."""
    comparison.to_csv(out / f"paired_{name}.csv", index=False)
    lines = [
        f"## Test set {name}: paired comparison (Dice %, 95 % bootstrap CI over test images and seeds)",
        "",
        "Δ: the arm minus the real-only arm at the same N_real (or minus the label-budget reference), "
        "image by image on the same seeds; a CI that excludes 0 is a difference the data support. Labels: "
        "labelled real pairs SAM saw / the generator (or pseudo-labeller) saw / both together; unlabelled "
        "images: pool images seen without their masks.",
        "",
        markdown_table(paired_table(comparison)),
    ]
    ellipses = paired_comparison(runs, name, method="sam_ellipse")
    if not ellipses.empty and ellipses.loc[ellipses["arm"] != "box-ellipse", "dice"].notna().any():
        ellipses.to_csv(out / f"paired_{name}_ellipse.csv", index=False)
        lines += [
            f"### Test set {name}: SAM's masks read as their fitted ellipses",
            "",
            "The same predictions, each replaced by the ellipse fitted to it (the shape HC is measured on; "
            "HC18's annotations are drawn ellipses), compared the same way.",
            "",
            markdown_table(paired_table(ellipses)),
        ]
    hc = hc_comparison(runs, name)
    if not hc.empty and hc["hc_mad_mm"].notna().any():
        hc.to_csv(out / f"hc_{name}.csv", index=False)
        quoted = ", ".join(f"{k} {v:.2f} mm" for k, v in PUBLISHED_HC_MAD_MM.items())
        lines += [
            f"### Test set {name}: head circumference (mm)",
            "",
            "Mean absolute difference between the HC of the ellipse fitted to SAM's mask and that of the "
            "annotation, at the working size, with its bootstrap CI; bias: the mean signed difference; no "
            f"ellipse: predictions without an HC (left out of the mean). For scale only ({quoted} on "
            "HC18's official test set at full resolution): not the same images or resolution.",
            "",
            markdown_table(hc_table(hc)),
        ]
    return lines


def write_paper_results(sweep_root: str | Path, out_dir: str | Path) -> Path:
    """Collect the sweeps below ``sweep_root`` and write the tables (CSV + Markdown) and the chart.

    The headline is the paired comparison (:mod:`fetalgen.report.paired`): per test set, every arm's Dice
    with its 95 % bootstrap CI over test images and seeds, its paired difference to the real-only arm and to
    the label-budget reference, the labels behind it, and the box-ellipse baseline on the same boxes.

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

    lines = introduction(runs, names)
    panels = []
    for name in names:
        comparison = paired_comparison(runs, name)
        if comparison.empty:
            continue
        lines += test_set_sections(runs, name, comparison, out)
        for cohort, part in comparison.groupby("train cohort"):
            panels.append((f"train {cohort} → test {name}", part))
    chart = out / "dice_vs_nreal.png"
    if panels:
        plot_ci_panels(panels, chart)
        lines += ["## Dice against N_real (95 % CI bands)", "", f"![Dice against N_real]({chart.name})", ""]
    lines += [
        "## Published headline figures beside ours",
        "",
        markdown_table(published),
        "## All runs (mean ± std over seeds)",
        "",
        markdown_table(table),
    ]
    report = out / "results.md"
    report.write_text("\n".join(lines) + "\n")
    return report
