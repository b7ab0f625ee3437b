"""Images/s of data-parallel training: 1 process vs N processes (torchrun), same global batch.

    python bench/bench_ddp.py --variant dcgan --steps 60 --nproc 2

Trains the same tiny-to-default model on Fashion-MNIST for a fixed number of steps with 1 and N
processes, reads images/s from each run's metrics log (the steady-state intervals, not the
first), and appends a table to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import add_row, machine  # noqa: E402


def run(nproc: int, args: argparse.Namespace, data: Path, out: Path) -> float:
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd = launcher + ["-m", "ganforge", "train", "--data", str(data), "--out", str(out),
                      "--variant", args.variant, "--steps", str(args.steps), "--no-progress",
                      "--set", f"batch_size={args.batch_size}", "--set", "log_every=10",
                      "--set", f"sample_every={args.steps}", "--set", "eval_n=0",
                      "--set", f"device={args.device}"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in recs if r.get("kind") == "train"][1:]
    return sum(speeds) / len(speeds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="dcgan")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    from ganforge import data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data.prepare("fashion-mnist", tmp / "data", limit=5000, progress=False)
        one = run(1, args, tmp / "data", tmp / "one")
        many = run(args.nproc, args, tmp / "data", tmp / "many")
    print(f"1 process: {one:,.0f} img/s; {args.nproc} processes: {many:,.0f} img/s; "
          f"ratio {many / one:.2f}")
    add_row("Data-parallel training (bench/bench_ddp.py)",
            f"Command: `python bench/bench_ddp.py --variant {args.variant} --steps {args.steps} "
            f"--nproc {args.nproc}`. Real images per second from the metrics log (first interval "
            "dropped); the same global batch in both runs; threads split evenly.",
            ["machine", "setting", "1 process img/s", "N processes img/s", "ratio"],
            [machine(), f"{args.variant}, global batch {args.batch_size}, {args.device}",
             f"{one:,.0f}", f"{many:,.0f} ({args.nproc} processes)", f"{many / one:.2f}x"])

if __name__ == "__main__":
    main()
