"""How long should G's weight average be? One training run, several averages of it.

The `fast` preset trains for MINUTES on Fashion-MNIST while, beside ganforge's own EMA of G,
this script keeps one extra average per profile (one `lerp` over G's parameters a step); at the
end each average gets BatchNorm statistics of its own (as the trainer gives G_ema) and 2,000 of
its samples, drawn from the same latents for every profile, are scored against the 10,000 test
images. Every profile averages the same trajectory, so their differences are the averaging's
alone (no seed or step-count spread between them), and the row `own` (the trainer's G_ema)
must equal the profile that repeats the trainer's decay (`c10`): a check of the script itself.

A profile `NAME=C:CAP` decays as min(CAP, (1 + t) / (C + t)) at G step t: ganforge's ramp is
C = 10. Such a ramp weights step s in proportion to about s^(C - 2), a power-function average
(EDM2's, with gamma = C - 2; for C = 10 about half the weight lies on the last 7.4 % of the
steps): a smaller C averages a longer share of the run, a larger one a shorter share. CAP bounds
the decay (0.999 is the preset's `ema`; it is reached at step 999 C - 1000). `raw=0:0` scores
G itself.

    python bench/ema_window.py --out /tmp/ema0 --minutes 8 --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from ganforge import data
from ganforge.checkpoint import load_checkpoint
from ganforge.config import PRESETS, build_config, parse_overrides
from ganforge.errors import GanforgeError
from ganforge.metrics import FeatureExtractor, evaluate_images, metric_name
from ganforge.metrics.training import generator_batches, reference_subset
from ganforge.train import train
from ganforge.train_utils import ema_update

DEFAULT_PROFILES = "c10=10:0.999,c5=5:0.999,c3=3:0.999,c20=20:0.999,c40=40:0.999,raw=0:0"


def parse_profiles(text: str) -> dict[str, tuple[float, float]]:
    out = {}
    for item in text.split(","):
        name, _, spec = item.partition("=")
        c, _, cap = spec.partition(":")
        try:
            out[name.strip()] = (float(c), float(cap))
        except ValueError:
            raise GanforgeError(f"--profiles: {item!r} is not NAME=C:CAP "
                                "(e.g. c10=10:0.999)") from None
    return out


def decay(c: float, cap: float, t: int) -> float:
    return min(cap, (1.0 + t) / (c + t)) if c > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory (must not exist)")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=2000, help="samples scored per profile")
    ap.add_argument("--profiles", default=DEFAULT_PROFILES)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the preset, e.g. lr_g=3e-3")
    args = ap.parse_args()
    profiles = parse_profiles(args.profiles)
    torch.set_num_threads(args.threads)
    extra = parse_overrides(args.set)
    cfg = build_config([PRESETS["fast"], dict(data="fashion-mnist", minutes=args.minutes,
                                              steps=args.steps, seed=args.seed,
                                              threads=args.threads, eval_every=0, eval_n=0),
                        extra])
    averages: dict[str, torch.nn.Module] = {}
    held: dict[str, object] = {}

    def hook(trainer) -> None:
        held["trainer"] = trainer
        if not averages:
            # the first G step: every average starts from G's initial weights, read from the
            # step-0 checkpoint the trainer writes before it trains (no later one exists yet)
            start = load_checkpoint(trainer.latest)
            assert start.step == 0, start.step
            for name in profiles:
                averages[name] = copy.deepcopy(trainer.G_ema)
                start.load_module(averages[name], "G")
        t = trainer.sched["g_steps"] - 1  # the step whose update the trainer just made
        for name, (c, cap) in profiles.items():
            ema_update(averages[name], trainer.G, decay(c, cap, t))

    result = train(cfg, args.out, progress=False, fault_hook=hook)
    if "trainer" not in held:
        sys.exit("the run ended before its first G step: nothing to average")
    trainer = held["trainer"]
    rollbacks = trainer.state["rollbacks"]
    print(f"trained {result.step} G steps, {rollbacks} rollbacks", flush=True)
    if rollbacks:  # a rollback restores G and G_ema, not the averages kept here
        print("warning: the health monitor rolled back; the profiles also averaged the steps "
              "it discarded, so they no longer compare with `own`", file=sys.stderr)
    ds = data.resolve("fashion-mnist:test", size=trainer.size, channels=trainer.channels,
                      progress=False)
    real, key = reference_subset(ds, len(ds))
    ex = FeatureExtractor(device="cpu", batch_size=50, progress=False)
    own = trainer.G_ema
    rows = []
    for name, G in [("own", own), *averages.items()]:
        trainer.G_ema = G
        trainer.ema_statistics()  # BatchNorm statistics of its own, as every G_ema gets
        gen = generator_batches(G, trainer.variant, cfg, args.n, 0, trainer.device)
        r = evaluate_images(gen, real, metrics=("fid", "kid"), real_key=key, split="test",
                            n_fake=args.n, extractor=ex, progress=False)
        row = dict(profile=name, spec=profiles.get(name), step=result.step,
                   fid=r[metric_name("fid", args.n, "test")],
                   kid=r[metric_name("kid", args.n, "test")], rollbacks=rollbacks)
        rows.append(row)
        print(json.dumps(row), flush=True)
    trainer.G_ema = own
    Path(args.out, "ema_window.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    try:
        main()
    except GanforgeError as e:
        sys.exit(f"error: {e}")
