"""Images/s of data-parallel training: 1 process vs N processes (torchrun), same global batch,
with the gradients all-reduced in one piece after backward (`overlap_grads=false`) and in
buckets while backward runs (`overlap_grads=true`, the default), side by side.

    python bench/bench_ddp.py --variant dcgan --steps 60 --nproc 2 --rounds 2

Trains the same model on Fashion-MNIST for a fixed number of steps in each setting, alternating
the settings for `--rounds` rounds, reads images/s from each run's metrics log (the
steady-state intervals, not the first), and appends the medians to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import add_row, machine  # noqa: E402


def run(nproc: int, args: argparse.Namespace, data: Path, out: Path,
        extra: tuple[str, ...] = ()) -> float:
    threads = args.threads or max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd = launcher + ["-m", "ganforge", "train", "--data", str(data), "--out", str(out),
                      "--variant", args.variant, "--steps", str(args.steps), "--no-progress",
                      "--set", f"batch_size={args.batch_size}", "--set", "log_every=10",
                      "--set", f"sample_every={args.steps}", "--set", "eval_n=0",
                      "--set", f"device={args.device}", *extra]
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
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0: the cores split evenly)")
    args = p.parse_args()
    from ganforge import data

    settings = {"1 process": (1, ()),
                "flat": (args.nproc, ("--set", "overlap_grads=false")),
                "overlap": (args.nproc, ("--set", "overlap_grads=true"))}
    results: dict[str, list[float]] = {k: [] for k in settings}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data.prepare("fashion-mnist", tmp / "data", limit=5000, progress=False)
        for r in range(args.rounds):
            for name, (nproc, extra) in settings.items():
                out = tmp / f"{name.replace(' ', '_')}-{r}"
                results[name].append(run(nproc, args, tmp / "data", out, extra))
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in
                                                  results.items()), flush=True)
    one, flat, overlap = (statistics.median(results[k]) for k in settings)
    print(f"1 process: {one:,.0f} img/s; {args.nproc} processes, flat all-reduce: {flat:,.0f} "
          f"({flat / one:.2f}x); overlapped: {overlap:,.0f} ({overlap / one:.2f}x); "
          f"load average {min(load):.1f}-{max(load):.1f}")
    add_row("Data-parallel training, gradient all-reduce after vs during backward "
            "(bench/bench_ddp.py)",
            f"Command: `python bench/bench_ddp.py --variant {args.variant} --steps {args.steps} "
            f"--nproc {args.nproc} --rounds {args.rounds}"
            f"{f' --threads {args.threads}' if args.threads else ''}`. Real images per second "
            "from the metrics log (first interval dropped), median of alternating rounds; the "
            "same global batch in every run; `flat` = one all-reduce after "
            "backward (`overlap_grads=false`, the code before issue 14), `overlap` = bucketed "
            "all-reduce during backward (the default).",
            ["machine", "setting", "1 process img/s", "N processes, flat", "N processes, overlap",
             "load average"],
            [machine(), f"{args.variant}, global batch {args.batch_size}, {args.device}, "
             f"{args.nproc} processes", f"{one:,.0f}", f"{flat:,.0f} ({flat / one:.2f}x)",
             f"{overlap:,.0f} ({overlap / one:.2f}x)", f"{min(load):.1f}-{max(load):.1f}"])

if __name__ == "__main__":
    main()
