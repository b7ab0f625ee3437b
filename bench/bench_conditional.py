"""Conditional and translation models on this machine, with a fixed wall-clock budget each.

    python bench/bench_conditional.py --minutes 3

* cgan on Fashion-MNIST (60k labelled training images): the small CNN classifier (trained on
  the real training set, cached) scores 100 generated images per class; its accuracy on the
  10,000 real test images is the ceiling. Plus per-class FID (100 generated vs 100 real test
  images of the class).
* pix2pix edges -> Fashion-MNIST (60k training pairs): L1 / PSNR of 500 translated test-split
  edge maps against their true items, and FID of those 500 vs the 500 true items.

Rows are appended to docs/BENCHMARKS.md (section "Conditional and translation models").
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="run directories (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-cond-"))
    common = dict(g_width=32, d_width=32, batch_size=64, minutes=args.minutes, steps=10**6,
                  log_every=100, sample_every=10**6, threads=args.threads, seed=0)

    t = time.time()
    res = train(build_config([{**common, "variant": "cgan", "data": "fashion-mnist"}]),
                root / "cgan", progress=False)
    gen = load_generator(root / "cgan", prefer="latest")
    r = ec.evaluate_conditional(gen, n_per_class=100, fid=True, progress=False)
    load = f"{os.getloadavg()[0]:.1f}"
    print(ec.format_conditional(r), f"({time.time() - t:.0f} s)")
    add_row(HEADER, INTRO, COLUMNS, [
        machine(), "cgan (hinge + SN, projection D)",
        f"{args.minutes:g} min, {args.threads} threads",
        str(res.step),
        f"accuracy on generated {r['acc_generated']:.3f} (100/class); per-class FID mean "
        f"{r['fid_class_mean']:.1f}",
        f"accuracy on real test {r['acc_real']:.3f} (10k)", load])

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
