"""HC agreement and the box-ellipse baseline on every real HC18 image (a benchmark, not a test).

1. Head circumference from the ellipse fitted to each filled annotation (fetalgen.metrics.biometry) against the
   CSV value: mean absolute difference in mm (goal < 1.0 mm), signed mean, and the same with the ellipse pushed
   half a pixel outward (fitted to pixel edges instead of boundary pixel centres) to show the convention's effect.
2. The trivial baseline: the ellipse inscribed in the box prompt, Dice at 256 x 256 (fetalgen.data.transforms.
   pad_resize: pad bottom/right to a square, then resize) with the paper's 0-20 px jitter per side (MedSAM's
   integer shifts, fetalgen.segmentation.prompts), repeated; and with tight boxes.

Usage:
    python experiments/bench/biometry_hc18.py [--root DATA/hc18] [--size 256] [--repeats 5] [--seed 0]
The root defaults to $FETALGEN_HC18_DIR, else data/hc18.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fetalgen.data.hc18 import read_hc18
from fetalgen.data.io import load_pair
from fetalgen.data.transforms import pad_resize
from fetalgen.evaluation.box_ellipse import box_ellipse_mask
from fetalgen.metrics.biometry import ellipse_circumference, fit_ellipse
from fetalgen.metrics.overlap import dice_score
from fetalgen.segmentation.prompts import jittered_box, tight_box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("FETALGEN_HC18_DIR", "data/hc18"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-jitter", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    cases = read_hc18(args.root)
    diff, diff_edge, diff_px, no_fit = [], [], [], []
    tight_dice, jitter_dice = [], np.zeros((args.repeats, len(cases)))
    rng = np.random.default_rng(args.seed)
    for i, case in enumerate(cases):
        image, mask = load_pair(case)
        _, small, _ = pad_resize(image, mask, args.size)
        tight_dice.append(dice_score(box_ellipse_mask(tight_box(small), small.shape), small))
        for r in range(args.repeats):
            box = jittered_box(small, rng, max_jitter_px=args.max_jitter, ref_size=256)
            jitter_dice[r, i] = dice_score(box_ellipse_mask(box, small.shape), small)

        e = fit_ellipse(mask)
        if e is None:
            no_fit.append(case.name)
            continue
        hc_px = ellipse_circumference(e.semi_major, e.semi_minor)
        hc_edge_px = ellipse_circumference(e.semi_major + 0.5, e.semi_minor + 0.5)
        diff.append(hc_px * case.pixel_size_mm - case.hc_mm)
        diff_edge.append(hc_edge_px * case.pixel_size_mm - case.hc_mm)
        diff_px.append(hc_px - case.hc_mm / case.pixel_size_mm)

    diff, diff_edge, diff_px = np.array(diff), np.array(diff_edge), np.array(diff_px)
    per_repeat = jitter_dice.mean(axis=1)
    fitted = [c.name for c in cases if c.name not in no_fit]
    worst = ", ".join(f"{fitted[j]} {diff[j]:+.2f}" for j in np.argsort(-np.abs(diff))[:3])
    print(f"HC18 at {args.root}: {len(cases)} images, {len(no_fit)} without an ellipse fit {no_fit or ''}")
    print("HC from the ellipse fitted to the filled annotation vs the CSV (mm):")
    for label, d in (("boundary pixel centres (used)", diff), ("pixel edges (+0.5 px)", diff_edge)):
        print(
            f"  {label:<30} mean |diff| {np.abs(d).mean():.3f}  signed mean {d.mean():+.3f}"
            f"  median |diff| {np.median(np.abs(d)):.3f}  max |diff| {np.abs(d).max():.3f}"
        )
    print(
        f"  signed offset: {diff_px.mean():+.3f} +- {diff_px.std():.3f} px of HC"
        f" (= {diff_px.mean() / (2 * np.pi):+.3f} px on the radius); largest: {worst}"
    )
    print(f"Box-ellipse baseline at {args.size}x{args.size}, Dice over {len(cases)} images:")
    print(f"  tight box                 {np.mean(tight_dice):.4f}")
    print(
        f"  jitter 0-{args.max_jitter} px per side   {per_repeat.mean():.4f} +- {per_repeat.std():.4f}"
        f" (mean +- sd over {args.repeats} repeats, seed {args.seed}; per-image sd {jitter_dice.std():.4f})"
    )
    print(f"[{time.perf_counter() - start:.1f} s]")


if __name__ == "__main__":
    main()
