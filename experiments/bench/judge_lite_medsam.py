"""The judge on the pretrained model: do LiteMedSAM's features and its box-prompted masks tell real pairs, shuffled
pairs and a generator's pairs apart? (issue 27's check of the judge, measured on one run's sets)

Three sets of pairs, all at LiteMedSAM's 256 px (the generator's images upsampled, as SAM reads them):

* real: the held-out HC18 pairs (the split's validation cases: no model trained on them);
* shuffled: the same images, each with the mask of another (a derangement);
* synthetic: a fetalgen-sample set.

Per set: **agreement**, LiteMedSAM zero-shot prompted with the tight box of each pair's mask, Dice with that mask
(shuffled: the box of the other mask; :func:`fetalgen.metrics.agreement.boxed_agreement`), and **KID** of its images
against the generator's real training images, on LiteMedSAM's mean-pooled encoder features. Shuffling changes masks
only, so its KID is the real set's. Encodings go through the disk embedding cache (``--cache``), so a reproduction
that already encoded these images costs decoder passes only.

    python experiments/bench/judge_lite_medsam.py --run outputs/reproduce-paper-cpu [--out judge.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fetalgen.data.dataset import PairDataset
from fetalgen.data.folder import read_folder
from fetalgen.data.hc18 import read_hc18
from fetalgen.data.provenance import TRAINING_CASES, read_training_cases, record_case
from fetalgen.metrics.agreement import boxed_agreement, derangement
from fetalgen.metrics.fidelity import kid_fid
from fetalgen.segmentation.box_judge import BoxJudge

SIZE = 256


def tensors(cases: list, size: int = SIZE) -> tuple[torch.Tensor, np.ndarray]:
    """Images ``[N, 1, S, S]`` in [0, 1] and bool masks ``[N, S, S]`` of ``cases`` through the data layer."""
    dataset = PairDataset(cases, size)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([item["image"] for item in items])
    return images, torch.stack([item["mask"][0] for item in items]).numpy() > 0.5


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a reproduce-paper output folder")
    parser.add_argument("--recipe", default="conditioned", help="the generator recipe of the synthetic set")
    parser.add_argument("--hc18", type=Path, default=None, help="HC18 root (default: $FETALGEN_HC18_DIR)")
    parser.add_argument("--cache", type=Path, default=Path("data/cache/sam_embeddings"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import os

    hc18 = args.hc18 or Path(os.environ.get("FETALGEN_HC18_DIR", "data/hc18"))
    torch.set_num_threads(2)
    judge = BoxJudge(cache_dir=args.cache)  # the same judge fidelity/box_judge=lite_medsam builds
    cache = judge.predictor.cache

    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [judge.predictor.embed(images[k : k + 8]).embeddings for k in range(0, len(images), 8)]
        )

    real_images, real_masks = tensors(read_hc18(hc18, args.run / "split" / "hc18" / "val.txt"))
    generator = args.run / "diffusion" / args.recipe
    reference_images, _ = tensors([record_case(r) for r in read_training_cases(generator / TRAINING_CASES)])
    syn_images, syn_masks = tensors(read_folder(args.run / "synthetic" / args.recipe, cohort="synthetic"))
    print(f"{len(real_images)} held-out real pairs, {len(syn_images)} synthetic, KID reference: "
          f"{len(reference_images)} generator training images", flush=True)  # fmt: skip

    reference = embed(reference_images).mean(dim=(2, 3))
    rows = {}
    real = boxed_agreement(judge, real_images, real_masks, real_images[:0], real_masks[:0], args.seed)
    shuffled_masks = real_masks[derangement(len(real_masks), args.seed)]
    shuffled = judge(real_images, shuffled_masks)
    real_kid = kid_fid(reference, embed(real_images).mean(dim=(2, 3)), 20, 100, args.seed)
    syn = boxed_agreement(judge, syn_images, syn_masks, real_images[:0], real_masks[:0], args.seed)
    syn_kid = kid_fid(reference, embed(syn_images).mean(dim=(2, 3)), 20, 100, args.seed)
    from fetalgen.metrics.agreement import pair_dice

    rows["real (held-out)"] = {"agreement": real["synthetic"], "kid": real_kid["kid"], "n": len(real_images)}
    rows["shuffled (real images, other masks)"] = {
        "agreement": float(pair_dice(shuffled, shuffled_masks).mean()), "kid": real_kid["kid"], "n": len(real_images)
    }  # fmt: skip
    rows[f"synthetic [{args.recipe}]"] = {"agreement": syn["synthetic"], "kid": syn_kid["kid"], "n": len(syn_images),
                                          "agreement_floor": syn["floor"]}  # fmt: skip
    print(f"{'pairs':40s} {'agreement':>10s} {'KID':>10s} {'n':>5s}")
    for name, row in rows.items():
        print(f"{name:40s} {row['agreement']:10.3f} {row['kid']:10.4f} {row['n']:5d}")
    print(f"(synthetic images with other synthetic masks: agreement {syn['floor']:.3f}; encodings: {cache.misses} "
          f"computed, {cache.hits} from the cache)")  # fmt: skip
    report = {
        "rows": rows,
        "features": "lite_medsam encoder, mean-pooled, 256 px",
        "cache_misses": cache.misses,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
