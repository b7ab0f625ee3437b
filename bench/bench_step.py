"""Speed of ganforge's training step against a plain float32 PyTorch loop of the same model.

    python bench/bench_step.py                         # fast preset (DCGAN 64/32, selfmod)
    python bench/bench_step.py --set batch_size=256    # same, larger batch
    python bench/bench_step.py --preset dcgan --seconds 30 --rounds 3

The plain loop is what a tutorial writes (the PyTorch DCGAN example's structure): float32,
one G forward per iteration whose fakes D sees detached for its step and attached for G's,
D's parameters left trainable during the G step, Adam without a fused kernel, minibatches
indexed from a uint8 tensor in memory (already faster than a per-image DataLoader). It trains
the very networks ganforge builds for the config (same widths, batch, losses, optimiser
settings). ganforge's figure is `ganforge train` itself, through its loop with logging and
health checks, read from its metrics log; each ganforge setting below runs the same config
with only the named keys changed. Measurements alternate (plain, then every ganforge setting)
for `--rounds` rounds; the median of each is reported with its ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import add_row, machine  # noqa: E402

SETTINGS: dict[str, dict] = {
    "ganforge fp32": {"amp": "off", "channels_last": False},
    "ganforge fp32 channels_last": {"amp": "off", "channels_last": True},
    "ganforge bf16": {"amp": "bf16", "channels_last": False},
    "ganforge bf16 channels_last": {"amp": "bf16", "channels_last": True},
}


def plain_loop(cfg, images: torch.Tensor, seconds: float, warmup: int = 10) -> float:
    """Real images/s of a straightforward float32 loop over ganforge's own networks."""
    from ganforge.variants import get_variant

    torch.manual_seed(cfg.seed)
    nets = get_variant(cfg.variant).build(cfg, images.shape[-1], images.shape[1])
    G, D = nets["G"].train(), nets["D"].train()
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2),
                             foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2),
                             foreach=False)
    b = cfg.batch_size
    ones, zeros = torch.ones(b), torch.zeros(b)

    def step() -> None:
        real = images[torch.randint(len(images), (b,))].float() / 127.5 - 1
        fake = G(torch.randn(b, cfg.z_dim))
        loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * b / (time.perf_counter() - t0)


def ganforge_loop(layers: list[dict], run: Path, seconds: float) -> float:
    """Real images/s that `ganforge train` logs (the first log interval, warm-up, dropped)."""
    from ganforge.config import build_config
    from ganforge.train import train

    cfg = build_config(layers + [{"steps": 10**8, "minutes": seconds / 60 + 0.05,
                                  "log_every": 10, "sample_every": 10**7, "eval_n": 0,
                                  "tensorboard": False}])
    train(cfg, run, progress=False)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("kind") == "train"][1:]
    kimg = recs[-1]["kimg"] - recs[0]["kimg"] if len(recs) > 1 else 0.0
    elapsed = recs[-1]["time_s"] - recs[0]["time_s"] if len(recs) > 1 else 0.0
    if elapsed <= 0:
        raise SystemExit("too few log intervals: raise --seconds")
    return kimg * 1000 / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to both loops")
    p.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-doc", action="store_true", help="print only")
    args = p.parse_args()
    from ganforge import config as C
    from ganforge import data

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = C.parse_overrides(args.set)
    names = args.settings.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = data.prepare("fashion-mnist", tmp / "data", limit=10000, progress=False)
        base = [C.PRESETS[args.preset], {**overrides, "data": str(ds.path), "device": "cpu",
                                         "ema": 0.0, "threads": args.threads}]
        cfg = C.build_config(base)
        if cfg.variant != "dcgan" or cfg.loss != "bce":
            raise SystemExit("the plain loop is written for BCE DCGAN configs")
        images = torch.from_numpy(np.array(ds.images)).permute(0, 3, 1, 2).contiguous()
        results: dict[str, list[float]] = {"plain fp32 loop": []}
        for r in range(args.rounds):
            results["plain fp32 loop"].append(plain_loop(cfg, images, args.seconds))
            for name in names:
                ips = ganforge_loop(base + [SETTINGS[name]], tmp / f"{name}-{r}".replace(" ", "_"),
                                    args.seconds)
                results.setdefault(name, []).append(ips)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()),
                  flush=True)
    plain = statistics.median(results["plain fp32 loop"])
    depth = "".join(f", {k} {getattr(cfg, k)}" for k in ("g_convs", "d_convs") if getattr(cfg, k))
    what = (f"`{args.preset}` preset{' + ' + ' '.join(args.set) if args.set else ''}: "
            f"{cfg.variant} G/D width {cfg.g_width}/{cfg.d_width}{depth}, {images.shape[-1]}px, "
            f"batch {cfg.batch_size}")
    for name, values in results.items():
        ips = statistics.median(values)
        print(f"{name:30s} {ips:8,.0f} img/s  x{ips / plain:.2f}")
        if args.no_doc:
            continue
        add_row("Training step vs a plain float32 loop (bench/bench_step.py)",
                "Command: `python bench/bench_step.py [--set KEY=VALUE]`. The same networks and "
                "batch trained by a straightforward float32 PyTorch loop (the DCGAN example's "
                "structure) and by `ganforge train` with the settings named; real images/s, "
                "median of alternating rounds, ratio to the plain loop measured in the same run.",
                ["machine", "model", "loop", "images/s", "vs plain"],
                [machine(), what, name, f"{ips:,.0f}", f"{ips / plain:.2f}x"])


if __name__ == "__main__":
    main()
