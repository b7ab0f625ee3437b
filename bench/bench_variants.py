"""Images/s that `ganforge train` reports for each variant at 28x28 on this machine.

    python bench/bench_variants.py --steps 60

Each variant trains with its default config (the SPEC's networks, losses and optimisers) on
5,000 Fashion-MNIST images; the figure is the mean `images_per_s` of the log intervals after
the first (real images per second, D steps included).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import add_row, machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="mlp,dcgan,wgan,wgan-gp,sngan")
    args = p.parse_args()
    from ganforge import data
    from ganforge.config import build_config
    from ganforge.train import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = data.prepare("fashion-mnist", tmp / "data", limit=5000, progress=False)
        for name in args.variants.split(","):
            cfg = build_config([{"data": str(ds.path), "variant": name, "steps": args.steps,
                                 "log_every": 10, "sample_every": args.steps, "eval_n": 0,
                                 "device": args.device}])
            train(cfg, tmp / name, progress=False)
            recs = [json.loads(x) for x in (tmp / name / "metrics.jsonl").read_text().splitlines()]
            speeds = [r["images_per_s"] for r in recs if r.get("kind") == "train"][1:]
            ips = sum(speeds) / len(speeds)
            print(f"{name:8s} {ips:8.0f} img/s  (batch {cfg.batch_size}, n_critic "
                  f"{cfg.n_critic})", flush=True)
            add_row("Training speed per variant, 28x28 (bench/bench_variants.py)",
                    f"Command: `python bench/bench_variants.py --steps {args.steps}`. Default "
                    "config of each variant on 5,000 Fashion-MNIST images; real images per "
                    "second as `train` logs them (first interval dropped).",
                    ["machine", "variant", "batch", "n_critic", "images/s"],
                    [machine(), name, str(cfg.batch_size), str(cfg.n_critic), f"{ips:,.0f}"])


if __name__ == "__main__":
    main()
