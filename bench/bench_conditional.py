"""Conditional and translation models on this machine, with a fixed wall-clock budget each.

    python bench/bench_conditional.py --minutes 3

* cgan on Fashion-MNIST (60k labelled training images): the small CNN classifier (trained on
  the real training set, cached) scores 100 generated images per class; its accuracy on the
  10,000 real test images is the ceiling. Plus per-class FID (100 generated vs 100 real test
  images of the class).
* pix2pix edges -> Fashion-MNIST (60k training pairs): L1 / PSNR of 500 translated test-split
  edge maps against their true items, and FID of those 500 vs the 500 true items.

Rows are appended to docs/BENCHMARKS.md (section "Conditional and translation models").

    python bench/bench_conditional.py --ablation 400 --threads 1

* within-class diversity of cgan: the same cgan trained for a fixed number of steps with
  the condition only joined to z or also setting G's BatchNorms (cond_norm), with and without
  the mode-seeking term; classifier accuracy beside the diversity ratio (mean pairwise
  distance of 100 generated images of a class over that of 100 real test images of it).
  Section "Within-class diversity of cgan".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from benchdoc import add_row, machine

from ganforge import evaluate_cond as ec
from ganforge.config import build_config
from ganforge.sample import load_generator
from ganforge.train import train

HEADER = "Conditional and translation models"
INTRO = ("`python bench/bench_conditional.py --minutes M`: each model trains for M minutes of "
         "wall clock on the CPU (batch 64, widths 32, torch threads as stated), then is scored on "
         "held-out data. cgan: a small CNN classifier trained on the 60k real training images "
         "(2 epochs) labels 100 generated images per class (accuracy on generated) beside its "
         "accuracy on the 10k real test images (the ceiling); per-class FID is 100 generated vs "
         "100 real test images of the class (small n: FID is biased high). pix2pix: 500 test-split "
         "edge maps translated, L1 (pixels in [0, 1]) and PSNR against the true items, FID of the "
         "500 translations vs the 500 true items. The machine is shared: the load average "
         "is given.")
COLUMNS = ["date / machine", "model", "budget", "steps", "score", "reference", "load avg"]
ABL_HEADER = "Within-class diversity of cgan (bench/bench_conditional.py --ablation)"
ABL_INTRO = ("`python bench/bench_conditional.py --ablation STEPS --threads T`: cgan on "
             "Fashion-MNIST (hinge + SN, batch 64, widths 32, seed 0) for a fixed number of "
             "steps, in four configurations. Diversity: the mean pairwise distance (16x16-pooled "
             "pixels) of 100 generated images of a class over that of 100 real test images of "
             "the class, averaged over the classes (1 = as varied as real; near 0 = every image "
             "of a class the same). Accuracy: the small CNN classifier labels 100 generated "
             "images per class.")
ABL_COLUMNS = ["date / machine", "G conditioning", "mode seeking λ", "steps", "train time",
               "accuracy on generated", "within-class diversity", "load avg"]
ABLATION = [("joined to z", dict(cond_norm=False, mode_seeking=0.0)),
            ("joined + conditional BatchNorm", dict(cond_norm=True, mode_seeking=0.0)),
            ("joined to z", dict(cond_norm=False, mode_seeking=0.1)),
            ("joined + conditional BatchNorm", dict(cond_norm=True, mode_seeking=0.1))]


def ablation(steps: int, threads: int, root: Path) -> None:
    for name, over in ABLATION:
        t = time.time()
        cfg = build_config([dict(variant="cgan", data="fashion-mnist", g_width=32, d_width=32,
                                 batch_size=64, steps=steps, log_every=100,
                                 sample_every=10**6, threads=threads, seed=0, health=False),
                            over])
        run = root / f"cgan-{int(over['cond_norm'])}-{over['mode_seeking']}"
        train(cfg, run, progress=False)
        took = time.time() - t
        r = ec.evaluate_conditional(load_generator(run, prefer="latest"), n_per_class=100,
                                    fid=False, progress=False)
        print(name, over, f"accuracy {r['acc_generated']:.3f} diversity "
              f"{r['diversity_ratio']:.3f} ({took:.0f} s)")
        add_row(ABL_HEADER, ABL_INTRO, ABL_COLUMNS, [
            machine(), name, f"{over['mode_seeking']:g}", str(steps),
            f"{took:.0f} s, {threads} thread(s)", f"{r['acc_generated']:.3f}",
            f"{r['diversity_ratio']:.3f}", f"{os.getloadavg()[0]:.1f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="run directories (default: a temp dir)")
    ap.add_argument("--models", default="cgan,pix2pix", help="which of cgan,pix2pix to run")
    ap.add_argument("--n-per-class", type=int, default=1000,
                    help="cgan: generated images per class the classifier labels")
    ap.add_argument("--ablation", type=int, default=0, metavar="STEPS",
                    help="instead: the within-class diversity ablation of cgan at STEPS steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-cond-"))
    if args.ablation:
        ablation(args.ablation, args.threads, root)
        return
    common = dict(g_width=32, d_width=32, batch_size=64, minutes=args.minutes, steps=10**6,
                  log_every=100, sample_every=10**6, threads=args.threads, seed=0)

    models = args.models.split(",")
    if "cgan" in models:
        cgan(args, common, root)
    if "pix2pix" in models:
        pix2pix(args, common, root)


def cgan(args: argparse.Namespace, common: dict, root: Path) -> None:
    t = time.time()
    res = train(build_config([{**common, "variant": "cgan", "data": "fashion-mnist"}]),
                root / "cgan", progress=False)
    gen = load_generator(root / "cgan", prefer="latest")
    n = args.n_per_class
    r = ec.evaluate_conditional(gen, n_per_class=100, fid=True, progress=False)
    if n != 100:  # the classifier is cheap: score many more images than FID can afford
        r.update({k: v for k, v in ec.evaluate_conditional(gen, n_per_class=n, fid=False,
                                                          progress=False).items()
                  if k in ("acc_generated", "diversity_ratio", "n_per_class")})
    load = f"{os.getloadavg()[0]:.1f}"
    print(ec.format_conditional(r), f"({time.time() - t:.0f} s)")
    add_row(HEADER, INTRO, COLUMNS, [
        machine(), "cgan (hinge + SN, projection D, conditional BN, mode seeking 0.1)",
        f"{args.minutes:g} min, {args.threads} threads",
        str(res.step),
        f"accuracy on generated {r['acc_generated']:.3f} ({n:,}/class); within-class diversity "
        f"{r['diversity_ratio']:.3f}; per-class FID mean {r['fid_class_mean']:.1f}",
        f"accuracy on real test {r['acc_real']:.3f} (10k)", load])


def pix2pix(args: argparse.Namespace, common: dict, root: Path) -> None:
    t = time.time()
    res = train(build_config([{**common, "variant": "pix2pix", "data": "fashion-mnist-edges"}]),
                root / "pix2pix", progress=False)
    gen = load_generator(root / "pix2pix", prefer="latest")
    r = ec.evaluate_translation(gen, n=500, progress=False)
    load = f"{os.getloadavg()[0]:.1f}"
    print(ec.format_translation(r), f"({time.time() - t:.0f} s)")
    add_row(HEADER, INTRO, COLUMNS, [
        machine(), "pix2pix edges → Fashion-MNIST",
        f"{args.minutes:g} min, {args.threads} threads",
        str(res.step),
        f"L1 {r['l1']:.4f}, PSNR {r['psnr']:.2f} dB, FID {r['fid']:.1f} (500, test)",
        "500 true test items", load])


if __name__ == "__main__":
    main()
