"""Does the discriminator know which samples are good? Selecting samples by D's logit.

A trained run's D scores a pool of samples of its averaged G (G_ema, what `evaluate` scores),
and N of them are chosen by several rules, each scored with FID against the reference images:

- `random`: N drawn without regard to D (three draws: the spread of the figure itself);
- `top` / `bottom`: the N that D finds most / least real;
- `SIR T`: sampling-importance resampling, N drawn without replacement with weights exp(d / T)
  (T = 1: D's density-ratio estimate taken at its word, p_data / p_G = exp(d) for the ideal
  D of the non-saturating loss; larger T trusts it less);
- `DRS qQ`: discriminator rejection sampling (Azadi et al. 2019): a sample is kept with
  probability sigmoid(F - gamma), F = d - d_max - log(1 - exp(d - d_max - eps)), gamma
  the Q-th percentile of F over the pool; scored on the first N kept (fewer when fewer were).

It also reports how well D separates the pool from real reference images (the AUC: the share
of (real, fake) pairs D orders correctly). The Inception features of the pool are computed once
(about 15 minutes for 10,000 samples on a 2-core CPU); `--cache FILE.npz` keeps them and the
logits for a rerun of the selection with other N.

    python bench/d_selection.py RUN --ref fashion-mnist:test --pool 10000 --n 2000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ganforge import checkpoint, data
from ganforge.config import config_from_dict
from ganforge.errors import GanforgeError
from ganforge.evaluate import set_name
from ganforge.metrics import FeatureExtractor
from ganforge.metrics.refstats import reference_stats
from ganforge.metrics.scores import feature_stats, fid_from_stats
from ganforge.metrics.training import reference_subset
from ganforge.sample import to_uint8
from ganforge.variants import get_variant

MAX_REAL = 10_000


@torch.no_grad()
def pool_and_logits(run: str, pool: int, seed: int, batch: int = 500
                    ) -> tuple[np.ndarray, np.ndarray, torch.nn.Module, int, int, int]:
    """`pool` samples of the run's latest G_ema (uint8 NHWC), D's logits on them, D (eval
    mode), the step, the image size and the channels."""
    ck = checkpoint.load_checkpoint(checkpoint.resolve(run, "latest"))
    cfg = config_from_dict(ck.config)
    variant = get_variant(cfg.variant)
    if variant.kind != "unconditional":
        raise GanforgeError(f"{ck.path}: a {variant.kind} model; this check takes an "
                            "unconditional one")
    if not any(k.startswith("G_ema.") for k in ck.tensors):
        raise GanforgeError(f"{ck.path}: the run kept no average of G (ema=0)")
    size, channels = int(ck.meta["state"]["size"]), int(ck.meta["state"]["channels"])
    nets = variant.build(cfg, size, channels)
    G, D = nets["G"], nets["D"]
    ck.load_module(G, "G_ema")
    ck.load_module(D, "D")
    G.eval()
    D.eval()
    gen = torch.Generator().manual_seed(seed)
    images, logits = [], []
    for start in range(0, pool, batch):
        x = G(variant.sample_z(min(batch, pool - start), cfg, generator=gen)).float()
        logits.append(D(x).float().flatten())
        images.append(to_uint8(x))
    return (np.concatenate(images), torch.cat(logits).numpy(), D, ck.step, size, channels)


@torch.no_grad()
def real_logits(D: torch.nn.Module, real: np.ndarray, batch: int = 500) -> np.ndarray:
    x = torch.from_numpy(np.array(real)).float().permute(0, 3, 1, 2) / 127.5 - 1
    return torch.cat([D(x[i:i + batch]).float().flatten()
                      for i in range(0, len(x), batch)]).numpy()


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """P(D(real) > D(fake)) over all pairs (ties count half)."""
    fs = np.sort(fake)
    below = np.searchsorted(fs, real, "left")
    tied = np.searchsorted(fs, real, "right") - below
    return float((below + 0.5 * tied).sum() / (len(real) * len(fake)))


def selections(d: np.ndarray, n: int, rng: np.random.Generator
               ) -> list[tuple[str, np.ndarray]]:
    """(rule, indices into the pool) for every rule of the module's docstring."""
    pool = len(d)
    rows = [(f"random ({i + 1})", rng.choice(pool, n, replace=False)) for i in range(3)]
    order = np.argsort(-d, kind="stable")
    rows += [("top by D", order[:n]), ("bottom by D", order[-n:])]
    for t in (1.0, 2.0, 4.0):
        w = np.exp((d - d.max()) / t)
        for i in range(2):
            rows.append((f"SIR T={t:g} ({i + 1})",
                         rng.choice(pool, n, replace=False, p=w / w.sum())))
    f = d - d.max() - np.log1p(-np.exp(d - d.max() - 1e-6))
    for q in (50, 80):
        keep = rng.random(pool) < 1 / (1 + np.exp(-(f - np.percentile(f, q))))
        rows.append((f"DRS q{q} (kept {int(keep.sum())})", np.nonzero(keep)[0][:n]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run directory (its latest checkpoint) or a checkpoint")
    ap.add_argument("--ref", default="fashion-mnist:test", help="reference images")
    ap.add_argument("--pool", type=int, default=10_000, help="samples D chooses from")
    ap.add_argument("--n", type=int, default=2000, help="samples each rule keeps")
    ap.add_argument("--seed", type=int, default=123, help="the pool's latents")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="npz of the pool's features and logits")
    args = ap.parse_args()
    if not 2 <= args.n <= args.pool:
        raise GanforgeError(f"--n must be between 2 and --pool ({args.pool}), got {args.n}")
    torch.set_num_threads(args.threads)
    images, d, D, step, size, channels = pool_and_logits(args.run, args.pool, args.seed)
    ds = data.resolve(args.ref, size=size, channels=channels, progress=False)
    real, key = reference_subset(ds, min(MAX_REAL, len(ds)))
    dr = real_logits(D, real)
    print(f"{args.run}: step {step}; D's logit on {len(d):,} samples of G_ema: mean "
          f"{d.mean():.2f} (sd {d.std():.2f}), on {len(dr):,} reference images: mean "
          f"{dr.mean():.2f} (sd {dr.std():.2f}); AUC {auc(dr, d):.3f}", flush=True)
    ex = FeatureExtractor(device="cpu", batch_size=50, progress=True)
    cached = np.load(args.cache) if args.cache and args.cache.exists() else None
    if cached is not None and len(cached["features"]) == len(d) and \
            np.array_equal(cached["logits"], d):
        feats = cached["features"]
    else:
        feats = ex.extract(images, desc="pool features").features
        if args.cache:
            np.savez(args.cache, features=feats, logits=d)
    ref = reference_stats(real, key, set_name(args.ref, ds), extractor=ex)
    print(f"\n| rule | FID of {args.n:,} samples against {len(real):,} images of {args.ref} |")
    print("|---|---|")
    for rule, idx in selections(d, args.n, np.random.default_rng(0)):
        mu, sigma = feature_stats(feats[idx])
        tag = "" if len(idx) == args.n else f" (on {len(idx):,})"
        print(f"| {rule} | {fid_from_stats(mu, sigma, ref.mu, ref.sigma):.2f}{tag} |",
              flush=True)


if __name__ == "__main__":
    try:
        main()
    except GanforgeError as e:
        sys.exit(f"error: {e}")
