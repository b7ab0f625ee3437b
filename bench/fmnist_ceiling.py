"""Where does the Fashion-MNIST default recipe level off? One long run, scored at several steps.

Trains the recipe `ganforge train --data fashion-mnist` picks (the `fast` preset) for MINUTES
with its thread setting (threads=0: torch's default, every core), keeps a copy of the checkpoint
at each step of --at (the trainer saves one every `sample_every` = 250 steps, so the steps must
be multiples of 250), then scores N samples of every copy and of the last checkpoint against the
10,000 test images with `ganforge evaluate`. The curve says how many steps the recipe needs for
a given FID with that seed in float32 (another seed, or bfloat16, starts another trajectory:
docs/BENCHMARKS.md, round 7); a machine's step rate turns steps into minutes.

    python bench/fmnist_ceiling.py --out /tmp/ceil --minutes 30 --at 2500,5000,10000,15000

`--set KEY=VALUE` (repeatable) changes the preset, to see where another recipe levels off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ganforge.config import PRESETS, build_config, parse_overrides
from ganforge.errors import GanforgeError
from ganforge.metrics import metric_name
from ganforge.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory (must not exist)")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--at", default="2500,5000,10000,15000",
                    help="steps to keep a checkpoint of (multiples of 250)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000, help="samples scored per checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the preset, e.g. g_width=96")
    args = ap.parse_args()
    try:
        at = sorted(int(s) for s in args.at.split(","))
    except ValueError:
        sys.exit(f"--at: a comma list of steps, got {args.at!r}")
    if any(s % PRESETS["fast"]["sample_every"] for s in at):
        sys.exit(f"--at: steps must be multiples of {PRESETS['fast']['sample_every']}")
    run = Path(args.out)
    cfg = build_config([PRESETS["fast"], dict(data="fashion-mnist", minutes=args.minutes,
                                              seed=args.seed, eval_every=0, eval_n=0),
                        parse_overrides(args.set)])
    kept: dict[int, Path] = {}  # by step: after a rollback the hook may see a step again

    def hook(trainer) -> None:
        # runs after G step `trainer.step`, before that step's checkpoint is written: the
        # checkpoint of step s is on disk when the hook sees step s + 1
        s = trainer.step - 1
        if s in at:
            dst = run / "checkpoints" / f"step-{s:06d}.safetensors"
            shutil.copyfile(trainer.latest, dst)
            kept[s] = dst

    result = train(cfg, run, progress=False, fault_hook=hook)
    print(f"trained {result.step} G steps", flush=True)
    missing = [s for s in at if s not in kept]
    if missing:  # not reached, or the clock stopped on the step itself (the last row has it)
        print(f"no checkpoint kept of step(s) {', '.join(map(str, missing))}", flush=True)
    rows = []
    for ckpt in [*(kept[s] for s in sorted(kept)), run / "checkpoints" / "latest.safetensors"]:
        out = subprocess.run(
            [sys.executable, "-m", "ganforge", "evaluate", str(ckpt), "--ref",
             "fashion-mnist:test", "--n", str(args.n), "--metrics", "fid,kid", "--json",
             "--no-progress"], stdout=subprocess.PIPE, text=True, check=True)
        r = json.loads(out.stdout)
        rows.append(dict(step=r["step"], fid=r[metric_name("fid", args.n, "test")],
                         kid=r[metric_name("kid", args.n, "test")]))
        print(json.dumps(rows[-1]), flush=True)
    (run / "ceiling.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    try:
        main()
    except GanforgeError as e:
        sys.exit(f"error: {e}")
