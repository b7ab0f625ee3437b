"""How far the quick FID a run logs can be trusted to rank its checkpoints.

For each checkpoint of a run (default: its best and its latest), the quick FID the trainer
computes (the run's eval_n generated images against as many training images, the same
reference subset) is recomputed with --seeds different latent draws. The spread over seeds is
the noise the best-checkpoint choice (ganforge.selection.TOLERANCE) has to stand above; the
per-seed difference between two checkpoints says whether the quick FID can rank them at all.

    python bench/quick_fid_noise.py RUN [--seeds 6] [--ckpt best --ckpt latest]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ganforge.metrics.training import TrainingEvaluator  # noqa: E402
from ganforge.sample import load_generator  # noqa: E402
from ganforge.variants import get_variant  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run directory")
    ap.add_argument("--ckpt", action="append", default=None,
                    help="best, latest or a checkpoint file (repeatable; default best, latest)")
    ap.add_argument("--seeds", type=int, default=6, help="latent draws per checkpoint")
    ap.add_argument("--n", type=int, default=0, help="images per figure (default: eval_n)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    names = args.ckpt or ["best", "latest"]
    gens = {}
    for name in names:
        path = (run / "checkpoints" / f"{name}.safetensors") if name in ("best", "latest") \
            else Path(name)
        gens[name] = load_generator(path)
    cfg = next(iter(gens.values())).config
    n = args.n or cfg.eval_n
    variant = get_variant(cfg.variant)
    # the trainer's own reference: the run's data as its variant loads it (size, crop, mirror)
    ds = variant.load_data(cfg, progress=False).ref
    evaluator = TrainingEvaluator(ds, n, torch.device("cpu"))
    n_classes = len(next(iter(gens.values())).classes) if variant.kind == "conditional" else 0
    fids: dict[str, list[float]] = {name: [] for name in names}
    for s in range(args.seeds):
        for name, g in gens.items():
            fids[name].append(evaluator(g.G, variant, g.config, cfg.seed + 3 + 1000 * s,
                                        n_classes)["fid"])
        print(f"seed {s}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in fids.items()),
              flush=True)
    print(f"\nquick FID of {n} images, {args.seeds} latent draws (the trainer's is draw 0):")
    for name, g in gens.items():
        v = fids[name]
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        print(f"  {name:>8} (step {g.step:>6}): mean {statistics.mean(v):7.2f}  std {sd:5.2f} "
              f"({sd / statistics.mean(v):.1%})  min {min(v):.2f}  max {max(v):.2f}")
    if len(names) == 2:
        a, b = names
        d = [x - y for x, y in zip(fids[a], fids[b], strict=True)]
        sd = statistics.stdev(d) if len(d) > 1 else float("nan")
        print(f"  {a} - {b}, same draws: mean {statistics.mean(d):+.2f}  std {sd:.2f}  "
              f"({sum(x < 0 for x in d)}/{len(d)} draws rank {a} lower)")


if __name__ == "__main__":
    main()
