"""A synthetic set described in a report: QC, memorisation and the fidelity figures of its ``summary.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def synthetic_set_markdown(
    root: str | Path, report_dir: str | Path, title: str = "Synthetic pairs"
) -> list[str]:
    """Markdown lines describing the set at ``root`` (its ``summary.json``); the nearest-neighbour gallery is
    copied into ``report_dir`` and shown. Sets judged before fidelity figures existed get QC lines only."""
    root, report_dir = Path(root), Path(report_dir)
    summary = json.loads((root / "summary.json").read_text())
    memo = summary.get("memorisation") or {}
    lines = [f"## {title}", "",
             f"{summary['n']} pairs in `{root}`: QC pass rate {_num(summary.get('qc_pass_rate'), 2)}, memorised "
             f"(pixel NCC > {memo.get('threshold')}) {_num(memo.get('rate'), 2)}.", ""]  # fmt: skip
    fidelity = summary.get("fidelity")
    if not fidelity:
        return [
            *lines,
            "No fidelity figures (fidelity.enabled=false, or a set written by an older fetalgen).",
            "",
        ]
    agree, spread, nn = fidelity["agreement"], fidelity["diversity"], fidelity["nearest_neighbours"]
    lines += [f"Features: {fidelity['features']}; over {fidelity['over']}.", "",
              "| figure | synthetic | reference |", "|---|---|---|"]  # fmt: skip
    for ref, kid in fidelity["realism"].items():
        lines.append(
            f"| KID ± std vs {ref} real images (FID) | {_num(kid['kid'], 4)} ± {_num(kid['kid_std'], 4)} "
            f"({_num(kid['fid'], 2)}) | 0 for a set like the reference |"
        )
    lines.append(
        f"| image-mask agreement (Dice of a reference segmenter) | {_num(agree['synthetic'])} | ceiling (real pairs) "
        f"{_num(agree['ceiling'])}, floor (shuffled masks) {_num(agree['floor'])} |"
    )
    real = ", ".join(f"{k} {_num(v['ms_ssim'])}" for k, v in spread.items() if k != "synthetic")
    lines.append(
        f"| MS-SSIM within the set (lower = more diverse) | {_num(spread['synthetic']['ms_ssim'])} | {real} |"
    )
    lines.append(f"| nearest training image, feature cosine median / max | {_num(nn['median_similarity'])} / "
                 f"{_num(nn['max_similarity'])} | 1 = a copy |")  # fmt: skip
    lines += ["", f"Agreement ceiling: {agree['ceiling_source']}; segmenter: {agree['segmenter']}.", ""]
    gallery = Path(nn["gallery"])
    if gallery.is_file():
        report_dir.mkdir(parents=True, exist_ok=True)
        target = report_dir / f"{root.name}_{gallery.name}"
        shutil.copyfile(gallery, target)
        lines += [f"![most similar synthetic / nearest training images]({target.name})", ""]
    return lines
