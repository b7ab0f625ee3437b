"""Quality per minute: train each configuration for the same wall-clock budget, then score it.

    python bench/bench_quality.py --budget-s 600 --n 5000                    # the CPU table
    python bench/bench_quality.py --budget-s 180 --n 10000 --device cuda     # the GPU table
    python bench/bench_quality.py --budget-s 60 --n 500 --configs fast       # a quick look

Each configuration trains on the 60,000 Fashion-MNIST training images for `--budget-s`
seconds (data preparation excluded, evaluation off during training), then `--n` images are
generated (EMA weights when the run keeps them) and scored against the 10,000 test images with
the standard TF-Inception protocol. One row per configuration is appended to
docs/BENCHMARKS.md, side by side in one run on one machine.

The `classic-*` configurations re-create, inside ganforge, the implementations people copy:
the same losses, optimisers, schedules and batch sizes, and the closest ganforge networks
(differences are listed beside each). The `fast` preset is ganforge's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import add_row, machine  # noqa: E402

CONFIGS: dict[str, tuple[dict, str]] = {
    "fast": ({"preset": "fast"}, "ganforge's CPU preset: DCGAN G width 64 / D 32 with a 3x3 "
             "conv per resolution (d_convs=1), self-modulated BatchNorms in G, z 16, BCE, "
             "Adam 2e-3 (0.5, 0.999), batch 64, EMA 0.999, channels-last, bf16 autocast "
             "where native"),
    "classic-mlp-wgangp": (
        {"variant": "mlp", "loss": "wasserstein", "gp_weight": 10.0, "n_critic": 5,
         "real_label": 1.0, "dropout": 0.0, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
         "beta2": 0.999, "batch_size": 64, "d_norm": "none"},
        "one-script MLP WGAN-GP: MLP G/D (ganforge's MLP has no BatchNorm in G), "
        "n_critic 5, Adam 2e-4 (0.5, 0.999), batch 64"),
    "classic-dcgan32": (
        {"variant": "dcgan", "size": 32, "batch_size": 64, "g_width": 64, "d_width": 16},
        "one-script DCGAN at 32x32: BCE, Adam 2e-4 (0.5, 0.999), batch 64 (ganforge's "
        "transposed-conv G instead of upsample+conv)"),
    "classic-face80": (
        {"variant": "wgan-gp", "size": 80, "channels": 1, "batch_size": 20,
         "schedule": "adaptive", "d_norm": "instance"},
        "80x80 WGAN-GP face tutorial: InstanceNorm critic, adaptive D/G balance, minibatch 20"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=600)
    p.add_argument("--n", type=int, default=5000, help="generated images scored")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", help="keep the runs in this directory")
    args = p.parse_args()
    from ganforge import config as C
    from ganforge.evaluate import evaluate_generator
    from ganforge.train import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for name in args.configs.split(","):
            overrides, what = CONFIGS[name]
            overrides = dict(overrides)
            layers = [C.PRESETS[overrides.pop("preset")]] if "preset" in overrides else []
            layers.append({**overrides, "data": "fashion-mnist", "steps": 10**9,
                           "minutes": args.budget_s / 60, "eval_n": 0, "sample_every": 10**8,
                           "log_every": 50, "device": args.device})
            cfg = C.build_config(layers)
            run = root / name
            t0 = time.monotonic()
            res = train(cfg, run, progress=False)
            wall = time.monotonic() - t0
            recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            train_recs = [r for r in recs if r.get("kind") == "train"]
            ips = sum(r["images_per_s"] for r in train_recs[1:]) / max(1, len(train_recs) - 1)
            kimg = train_recs[-1]["kimg"] if train_recs else 0.0
            scores = evaluate_generator(str(run), ref="fashion-mnist:test", n=args.n,
                                        metrics=("fid", "kid"), device=args.device,
                                        prefer="latest", progress=False)
            fid_key = next(k for k in scores if k.startswith("fid"))
            kid_key = next(k for k in scores if k.startswith("kid") and not k.endswith("_std"))
            epochs = kimg * 1000 / 60000
            print(f"{name:20s} {fid_key}={scores[fid_key]:.2f} {kid_key}={scores[kid_key]:.4f} "
                  f"steps={res.step} epochs={epochs:.2f} img/s={ips:,.0f}", flush=True)
            add_row(
                "Quality in a fixed training time (bench/bench_quality.py)",
                "Command: `python bench/bench_quality.py --budget-s B --n N --device D`. "
                "Each configuration trains on Fashion-MNIST train for B seconds (wall clock, "
                "evaluation off), then N generated images are scored against the 10,000 test "
                "images (TF-Inception 2015-12-05, float32 features, float64 statistics).",
                ["machine", "configuration", "budget", "FID", "KID", "G steps", "epochs",
                 "real images/s"],
                [machine(), f"`{name}`: {what}", f"{args.budget_s:.0f} s ({wall:.0f} s wall)",
                 f"{fid_key} = {scores[fid_key]:.2f}", f"{scores[kid_key]:.4f}",
                 f"{res.step:,}", f"{epochs:.2f}", f"{ips:,.0f}"])


if __name__ == "__main__":
    main()
