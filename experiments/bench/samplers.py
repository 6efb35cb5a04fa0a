"""Sampler cost against quality on one trained generator: DDPM-1000 against samplers at 20 and at <= 10 steps.

Trains a model briefly (or loads ``--ckpt``), then samples the same N pairs (same per-pair seeds) with each
sampler, side by side in one run, and prints wall time per pair, the speed-up against DDPM-1000, the QC pass
rate (with its binomial standard error), the median ellipse-fit IoU of the masks, and the image-side figures:
KID against the generator's training images (features: ``--features``, named in the output) and the image-mask
agreement of a reference segmenter trained on those training pairs (fetalgen.synthesis.reference), so "faster at
equal quality" is judged on the images too, not on the masks alone. A mask-conditioned generator draws images for
the same masks with every sampler (drawn from its shape prior by the pair's seed): its mask QC passes by
construction, and agreement and KID are what tell the samplers apart.

    python experiments/bench/samplers.py                       # small model, phantom data, ~5 min on 2 CPUs
    python experiments/bench/samplers.py --ckpt run/checkpoints/last.ckpt --n 64
    FETALGEN_HC18_DIR=/data/hc18 python experiments/bench/samplers.py --train-steps 3000 --n 64

Goals: DPM-Solver++ at 20-25 steps at least 40x faster than DDPM-1000 with no loss in QC pass rate beyond
noise (issue 3); the best sampler at <= 10 steps, judged on agreement and KID (issue 19). A briefly trained
model makes poor masks whatever the sampler: the timings are what it
measures reliably; compare QC between samplers, not with a well-trained model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from fetalgen.cli import CONFIG_DIR
from fetalgen.diffusion.channels import unpack
from fetalgen.diffusion.checkpoint import load_generator
from fetalgen.diffusion.postprocess import clean_mask
from fetalgen.diffusion.sampling import is_mask_conditioned, make_sampler, masks_to_tensor, sample_pairs
from fetalgen.diffusion.shape_prior import ShapePrior
from fetalgen.metrics.synthesis import qc_mask
from fetalgen.tasks.train_diffusion import train_diffusion
from fetalgen.utils.device import resolve_device
from fetalgen.utils.files import write_json
from fetalgen.utils.seeds import derive_seed, seeded_rng


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint to benchmark (unset: train one first)")
    p.add_argument("--preset", default="small", help="model preset to train (conf/model/diffusion/)")
    p.add_argument("--generator", default="joint", help="generator to train: joint | mask_conditioned")
    p.add_argument("--train-steps", type=int, default=150, help="optimizer steps of the brief training")
    p.add_argument("--train-batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--num-real", type=int, default=40, help="training images (phantom, or HC18 if set)")
    p.add_argument("--n", type=int, default=8, help="pairs sampled by each sampler (the same seeds for all)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per sampling forward pass")
    p.add_argument(
        "--samplers",
        default="ddpm:1000,sde-dpmsolver++:20,sde-dpmsolver++:10,dpmsolver++:10,unipc:10,ddim:10,ddpm:10",
        help="comma-separated name:steps; the first is the reference of the speed-up",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the sampled pairs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch's choice)")
    p.add_argument(
        "--features",
        default="sam_tiny",
        help="fidelity feature config (conf/fidelity/features/): sam_tiny | sam_vit_b | inception",
    )
    p.add_argument(
        "--segmenter-steps", type=int, default=300, help="training steps of the agreement segmenter"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (unset: a new temporary folder)")
    return p.parse_args()


def train(args: argparse.Namespace, out: Path, device: torch.device) -> Path:
    """Train ``args.preset`` for ``args.train_steps`` steps through the real config; return last.ckpt."""
    hc18 = os.environ.get("FETALGEN_HC18_DIR")
    overrides = [
        f"model=diffusion/{args.preset}",
        f"generator={args.generator}",
        f"data={'hc18' if hc18 else 'phantom'}",
        f"data.num_real={args.num_real}",
        "data.num_val=0",
        f"data.batch_size={args.train_batch_size}",
        "logger=none",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.max_steps={args.train_steps}",
        f"model.lr_scheduler.num_warmup_steps={max(1, args.train_steps // 10)}",
        "trainer.enable_progress_bar=false",
        f"callbacks.model_checkpoint.every_n_train_steps={args.train_steps}",
        "callbacks.sample_grid.every_n_steps=0",
        f"seed={args.seed}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_diffusion", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "train")
        cfg.paths.log_dir = str(out / "logs")
        if not hc18:
            cfg.paths.data_dir = str(out / "data")
    print(f"training {args.preset} for {args.train_steps} steps on {'HC18' if hc18 else 'phantom'} data ...")
    t0 = time.perf_counter()
    metrics = train_diffusion(cfg)
    print(f"  done in {time.perf_counter() - t0:.0f} s, final train/loss {metrics['train/loss']:.4f}")
    return Path(metrics["checkpoint"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_sampler(
    unet,
    scheduler_config,
    name: str,
    steps: int,
    seeds: list[int],
    batch_size: int,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict]:
    """Sample the pairs of ``seeds`` with one sampler (for the given ``masks`` [N,1,S,S], a mask-conditioned
    generator): the images ``[N, 1, S, S]`` in [0, 1], the cleaned masks, and the wall time and mask QC."""
    scheduler, steps = make_sampler(name, scheduler_config, steps)
    device = unet.device

    def given(i: int, k: int) -> torch.Tensor | None:
        return None if masks is None else masks[i : i + k]

    sample_pairs(unet, scheduler, seeds[:1], min(steps, 2), masks=given(0, 1))  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    chunks = [
        sample_pairs(unet, scheduler, seeds[i : i + batch_size], steps, masks=given(i, batch_size))
        for i in range(0, len(seeds), batch_size)
    ]
    sync(device)
    seconds = time.perf_counter() - t0
    images, channels = unpack(torch.cat(chunks).float().cpu())
    masks = np.stack([clean_mask(c[0].numpy()) for c in channels])
    qc = [qc_mask(m) for m in masks]
    passed = np.array([r.passed for r in qc], dtype=float)
    return (
        images,
        masks,
        {
            "sampler": name,
            "steps": steps,
            "seconds": seconds,
            "seconds_per_pair": seconds / len(seeds),
            "qc_pass_rate": float(passed.mean()),
            "qc_pass_se": float(np.sqrt(passed.mean() * (1 - passed.mean()) / len(seeds))),
            "ellipse_iou_median": float(np.median([r.ellipse_iou for r in qc])),
        },
    )


class ImageJudge:
    """KID against the generator's training images and the reference segmenter's image-mask agreement."""

    def __init__(self, meta: dict, features_name: str, segmenter_steps: int, seed: int) -> None:
        from fetalgen.data.dataset import PairDataset
        from fetalgen.data.provenance import record_case
        from fetalgen.synthesis.reference import ReferenceSegmenter

        if not meta.get("training_cases"):
            raise SystemExit("the checkpoint lists no training cases: KID and agreement need them")
        data = PairDataset([record_case(r) for r in meta["training_cases"]], meta["image_size"])
        images = torch.from_numpy(np.stack(data.images).astype(np.float32) / 255)[:, None]
        masks = torch.from_numpy(np.stack(data.masks) > 0).float()[:, None]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            spec = compose(
                "sample", overrides=["ckpt_path=-", f"fidelity/features={features_name}"]
            ).fidelity.features
        self.features = hydra.utils.instantiate(spec)
        self.train_features = self.features(images)
        self.segmenter = ReferenceSegmenter(meta["image_size"], seed=seed)
        self.segmenter.fit(images, masks, steps=segmenter_steps)

    def __call__(self, images: torch.Tensor, masks: np.ndarray) -> dict:
        from fetalgen.metrics.agreement import pair_dice
        from fetalgen.metrics.fidelity import kid_fid

        kid = kid_fid(self.train_features, self.features(images), subset_size=50)
        agreement = pair_dice(self.segmenter.predict(images), masks)
        return {"kid": kid["kid"], "kid_std": kid["kid_std"], "pair_agreement": float(agreement.mean())}


def table(rows: list[dict]) -> str:
    ref = rows[0]
    lines = [
        f"{'sampler':<14}{'steps':>6}{'s/pair':>10}{'speed-up':>10}{'QC pass':>14}{'ellipse IoU':>13}"
        f"{'KID vs train':>18}{'agreement':>11}",
        f"{'':<14}{'':>6}{'':>10}{'vs ' + ref['sampler']:>10}{'(+- s.e.)':>14}{'median':>13}{'(+- std)':>18}"
        f"{'(Dice)':>11}",
    ]
    for r in rows:
        speedup = ref["seconds_per_pair"] / r["seconds_per_pair"]
        qc = f"{r['qc_pass_rate']:.2f}+-{r['qc_pass_se']:.2f}"
        kid = f"{r['kid']:.4f}+-{r['kid_std']:.4f}"
        lines.append(
            f"{r['sampler']:<14}{r['steps']:>6}{r['seconds_per_pair']:>10.3f}{speedup:>9.1f}x{qc:>14}"
            f"{r['ellipse_iou_median']:>13.3f}{kid:>18}{r['pair_agreement']:>11.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    out = args.out or Path(tempfile.mkdtemp(prefix="fetalgen-bench-samplers-"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or train(args, out, device)
    unet, scheduler_config, meta = load_generator(ckpt, device=device)
    seeds = [derive_seed(args.seed, i) for i in range(args.n)]
    given_masks = None
    if is_mask_conditioned(unet):  # the same masks for every sampler, drawn as fetalgen-sample draws them
        prior = ShapePrior.from_dict(meta["shape_prior"])
        given_masks = masks_to_tensor(
            [prior.mask(seeded_rng(args.seed, i), meta["image_size"]) for i in range(args.n)]
        )
    print(
        f"checkpoint {ckpt} (step {meta['global_step']}, {meta['image_size']} px), {args.n} pairs, "
        f"batch {args.batch_size}, device {device}, {torch.get_num_threads()} CPU threads"
    )
    judge = ImageJudge(meta, args.features, args.segmenter_steps, args.seed)
    print(f"KID features: {judge.features.name}; agreement segmenter: {args.segmenter_steps} steps on the "
          f"{len(judge.train_features)} training pairs")  # fmt: skip
    rows = []
    for spec in args.samplers.split(","):
        name, _, steps = spec.partition(":")
        images, masks, row = bench_sampler(
            unet, scheduler_config, name, int(steps) if steps else None, seeds, args.batch_size, given_masks
        )
        rows.append(row | judge(images, masks))
        print(f"  {name}-{rows[-1]['steps']}: {rows[-1]['seconds']:.1f} s")
    print(table(rows))
    write_json(
        out / "bench_samplers.json",
        {
            "checkpoint": str(ckpt),
            "n": args.n,
            "device": str(device),
            "features": judge.features.name,
            "rows": rows,
        },
    )
    print(f"results: {out / 'bench_samplers.json'}")


if __name__ == "__main__":
    main()
