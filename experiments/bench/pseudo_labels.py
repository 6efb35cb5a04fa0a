"""How good are the pseudo-labels the keep rule keeps? A pseudo-labelled set against the masks it never saw.

The pool images of HC18 have masks; the few-label setting pretends they do not, and nothing that trains reads them.
This diagnostic does, afterwards, to judge the stated keep rule (``fetalgen.pseudo.rule``): the Dice of each
pseudo-label against the hidden mask at the image's own size, for the kept and the rejected masks side by side, and
for each reason of rejection. Reading training-pool masks for a diagnostic is no leakage: no validation or test
image is among them, and no setting is chosen from this output.

    FETALGEN_HC18_DIR=../shared/data/hc18 python experiments/bench/pseudo_labels.py <pseudo set> [<pseudo set> ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from fetalgen.data.hc18 import read_hc18
from fetalgen.data.io import load_mask
from fetalgen.data.synthetic import read_manifest
from fetalgen.metrics.overlap import dice_score


def dice_rows(root: Path, truth: dict[str, Path]) -> list[tuple[bool, list[str], float, float]]:
    """Per pseudo-label: kept, reasons, SAM's predicted IoU and the Dice against the hidden mask."""
    rows = []
    for entry in read_manifest(root):
        pseudo = cv2.imread(str(root / entry.mask), cv2.IMREAD_GRAYSCALE) > 127
        hidden = load_mask(truth[entry.name], pseudo.shape)
        reasons, iou = entry.qc.get("reasons", []), entry.qc.get("predicted_iou")
        rows.append((entry.qc_pass, reasons, iou, dice_score(pseudo, hidden)))
    return rows


def summary(label: str, dice: list[float]) -> str:
    if not dice:
        return f"  {label:<28} n=0"
    values = np.asarray(dice) * 100
    return (f"  {label:<28} n={len(values):<4d} Dice mean {values.mean():6.2f}  median {np.median(values):6.2f}  "
            f"< 80 %: {np.mean(values < 80) * 100:5.1f} % of them")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sets", nargs="+", type=Path, help="folders written by fetalgen-pseudo-label")
    parser.add_argument("--hc18", type=Path, default=Path(os.environ.get("FETALGEN_HC18_DIR", "data/hc18")))
    args = parser.parse_args()
    truth = {c.name: c.mask_path for c in read_hc18(args.hc18)}
    everything = []
    for root in args.sets:
        rows = dice_rows(root, truth)
        everything += rows
        print(f"{root}: {len(rows)} pseudo-labels, {sum(r[0] for r in rows)} kept")
        print(summary("kept", [r[3] for r in rows if r[0]]))
        print(summary("rejected", [r[3] for r in rows if not r[0]]))
        for reason in sorted({x.split(":")[0] for r in rows for x in r[1]}):
            print(
                summary(
                    f"rejected for {reason}", [r[3] for r in rows if any(x.startswith(reason) for x in r[1])]
                )
            )
    if len(args.sets) > 1:
        print(f"all {len(args.sets)} sets:")
        print(summary("kept", [r[3] for r in everything if r[0]]))
        print(summary("rejected", [r[3] for r in everything if not r[0]]))


if __name__ == "__main__":
    main()
