"""Charts of sweep summaries (matplotlib, Agg): metric against a setting, with std bands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _draw_lines(
    ax: plt.Axes, summary: pd.DataFrame, x: str, metric: str, hue: str | None, scale: float
) -> None:
    groups = summary.groupby(hue, dropna=False) if hue and hue in summary.columns else [(None, summary)]
    for label, part in groups:
        part = part.sort_values(x)
        mean = part[f"{metric}_mean"] * scale
        std = part[f"{metric}_std"] * scale
        name = metric if label is None else f"{hue}={label}"
        (line,) = ax.plot(part[x], mean, marker="o", label=name)
        ax.fill_between(part[x], mean - std, mean + std, color=line.get_color(), alpha=0.2)


def _log_axis(ax: plt.Axes, values: pd.Series) -> None:
    """A logarithmic x axis ticked at the plotted values, labelled as plain numbers (5, 10, 20, ...)."""
    ax.set_xscale("log")
    ticks = sorted(float(v) for v in values.dropna().unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _finish_axis(ax: plt.Axes, summary: pd.DataFrame, x: str, logx: bool, title: str, ylabel: str) -> None:
    if logx:
        _log_axis(ax, summary[x])
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: plt.Figure, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _draw_baseline(ax: plt.Axes, summary: pd.DataFrame, baseline: str | None, scale: float) -> None:
    column = f"{baseline}_mean" if baseline else None
    if column and column in summary.columns and summary[column].notna().any():
        value = summary[column].mean() * scale
        ax.axhline(value, color="gray", linestyle="--", label=f"box-ellipse baseline ({value:.1f})")


def plot_metric(
    summary: pd.DataFrame,
    x: str,
    metric: str,
    out: str | Path,
    hue: str | None = None,
    baseline: str | None = None,
    logx: bool = False,
    title: str | None = None,
    scale: float = 100.0,
) -> Path:
    """Plot ``<metric>_mean`` (± ``_std`` band) of a :func:`~fetalgen.report.aggregate.summarise` frame.

    Args:
        summary: one row per setting, with ``<metric>_mean`` and ``<metric>_std`` columns.
        x: the setting on the horizontal axis (e.g. ``data.num_real``).
        metric: the metric name (e.g. ``test/hc18/dice``).
        out: PNG path.
        hue: one line per value of this setting (e.g. ``arm`` or ``data.synthetic_ratio``).
        baseline: a metric drawn as a horizontal reference line (its mean over all rows).
        logx: logarithmic x axis.
        scale: multiply values (100 shows Dice in %).
    """
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    _draw_lines(ax, summary, x, metric, hue, scale)
    _draw_baseline(ax, summary, baseline, scale)
    ylabel = f"{metric} (x{scale:g})" if scale != 1 else metric
    _finish_axis(ax, summary, x, logx, title or f"{metric} against {x}", ylabel)
    return _save(fig, out)


def plot_ci_panels(
    panels: Sequence[tuple[str, pd.DataFrame]], out: str | Path, scale: float = 100.0, ncols: int = 2
) -> Path:
    """Dice against N_real per arm with 95 % CI bands, one panel per ``(title, comparison)``.

    ``comparison`` is a :func:`fetalgen.report.paired.paired_comparison` frame: arms with several N_real are
    lines with bands, an arm at one N_real (the label-budget reference) a point with an error bar, and the
    ``box-ellipse`` row a horizontal band.
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4 * nrows), dpi=110, squeeze=False)
    for ax, (title, comparison) in zip(axes.flat, panels, strict=False):
        arms = comparison[comparison["arm"] != "box-ellipse"]
        for arm, part in arms.groupby("arm", sort=False):
            part = part.sort_values("N_real")
            x, mean = part["N_real"], part["dice"] * scale
            low, high = part["dice_low"] * scale, part["dice_high"] * scale
            if len(part) == 1:
                ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="s", capsize=4, label=arm)
                continue
            (line,) = ax.plot(x, mean, marker="o", label=arm)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
        base = comparison[comparison["arm"] == "box-ellipse"]
        if len(base):
            b = base.iloc[0]
            ax.axhline(b["dice"] * scale, color="gray", linestyle="--",
                       label=f"box-ellipse baseline ({b['dice'] * scale:.1f})")  # fmt: skip
            ax.axhspan(b["dice_low"] * scale, b["dice_high"] * scale, color="gray", alpha=0.15)
        _finish_axis(ax, arms, "N_real", True, title, "Dice (%), 95% CI")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, out)
