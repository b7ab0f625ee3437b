"""Does the discriminator know which samples are good? Selecting samples by D's logit.

A trained run's D scores a pool of samples of its averaged G (G_ema, what `evaluate` scores),
and N of them are chosen by several rules, each scored with FID against the reference images:

- `random`: N drawn without regard to D (three draws from the one pool; they overlap, so
  their spread understates that of independent pools);
- `top` / `bottom`: the N that D finds most / least real;
- `SIR T`: weighted sampling without replacement, weights exp(d / T) (T = 1: D's logit taken
  as log(p_data / p_G), which the optimal D of the BCE loss with real label 1 gives, the loss
  of `dcgan` and the `fast` preset; larger T trusts it less);
- `DRS qQ`: discriminator rejection sampling (Azadi et al. 2019): a sample is kept with
  probability sigmoid(F - gamma), F = d - d_max - log(1 - exp(d - d_max - eps)), gamma
  the Q-th percentile of F over the pool; scored on the first N kept (fewer when fewer were).

What D is here: the run's D as it was saved, in eval mode, its BatchNorm layers using the
running statistics of training (averaged over the all-real and all-fake batches it was
trained on: not the statistics of any one batch it saw; `--bn batch` gives each batch of
`batch_size` samples, or of real images, its own statistics instead, as in training),
trained against G, not G_ema, and not recalibrated on G_ema's samples as DRS's paper does.
The rules test that D, not the best D-based filter there could be.

It also reports how well D separates the pool from real reference images (the AUC: the share
of (real, fake) pairs D orders correctly). The Inception features of the pool are computed once
(about 15 minutes for 10,000 samples on a 2-core CPU); `--cache FILE.npz` keeps them and the
key of the pool's images for a rerun with other N or `--bn`.

    python bench/d_selection.py RUN --ref fashion-mnist:test --pool 10000 --n 2000
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from ganforge import checkpoint, data
from ganforge.config import config_from_dict
from ganforge.errors import GanforgeError
from ganforge.evaluate import MAX_REAL, set_name
from ganforge.metrics import FeatureExtractor
from ganforge.metrics.refstats import reference_stats
from ganforge.metrics.scores import feature_stats, fid_from_stats
from ganforge.metrics.training import reference_subset
from ganforge.sample import to_uint8
from ganforge.variants import get_variant

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feature_cache  # noqa: E402


def load_nets(run: str) -> tuple:
    """(cfg, variant, G_ema, D, step, size, channels) of the run's latest checkpoint; G_ema and
    D in eval mode."""
    ck = checkpoint.load_checkpoint(checkpoint.resolve(run, "latest"))
    cfg = config_from_dict(ck.config)
    variant = get_variant(cfg.variant)
    if variant.kind != "unconditional":
        raise GanforgeError(f"{ck.path}: a {variant.kind} model; this check takes an "
                            "unconditional one")
    if cfg.loss != "bce" or cfg.real_label != 1.0:
        raise GanforgeError(f"{ck.path}: loss={cfg.loss}, real_label={cfg.real_label}; D's "
                            "logit estimates log(p_data / p_G) only with loss=bce and "
                            "real_label=1")
    if not any(k.startswith("G_ema.") for k in ck.tensors):
        raise GanforgeError(f"{ck.path}: the run kept no average of G (ema=0)")
    size, channels = int(ck.meta["state"]["size"]), int(ck.meta["state"]["channels"])
    nets = variant.build(cfg, size, channels)
    G, D = nets["G"], nets["D"]
    ck.load_module(G, "G_ema")
    ck.load_module(D, "D")
    return cfg, variant, G.eval(), D.eval(), ck.step, size, channels


@torch.no_grad()
def sample_pool(cfg, variant, G: torch.nn.Module, pool: int, seed: int,
                batch: int = 500) -> np.ndarray:
    """`pool` samples of G as uint8 NHWC."""
    gen = torch.Generator().manual_seed(seed)
    return np.concatenate([to_uint8(G(variant.sample_z(min(batch, pool - start), cfg,
                                                      generator=gen)).float())
                           for start in range(0, pool, batch)])


@torch.no_grad()
def logits(D: torch.nn.Module, images: np.ndarray, batch: int, bn: str) -> np.ndarray:
    """D's logits on uint8 NHWC images, `batch` at a time; bn="running": BatchNorm in eval
    mode; bn="batch": with the statistics of each batch (as D saw all-real and all-fake
    batches in training; the running statistics are put back afterwards)."""
    saved = copy.deepcopy(D.state_dict())
    D.train(bn == "batch")
    x = torch.from_numpy(np.array(images)).float().permute(0, 3, 1, 2) / 127.5 - 1
    out = torch.cat([D(x[i:i + batch]).float().flatten() for i in range(0, len(x), batch)])
    D.load_state_dict(saved)
    D.eval()
    return out.numpy()


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
            rows.append((f"weighted T={t:g} ({i + 1})",
                         rng.choice(pool, n, replace=False, p=w / w.sum())))
    f = d - d.max() - np.log1p(-np.exp(d - d.max() - 1e-6))
    for q in (50, 80):
        keep = rng.random(pool) < 1 / (1 + np.exp(-(f - np.percentile(f, q))))
        rows.append((f"DRS q{q} (kept {int(keep.sum())})", np.nonzero(keep)[0][:n]))
    return rows


def digest(images: np.ndarray) -> str:
    """The pool's cache key: a hash of its images (count, shape and every pixel)."""
    return hashlib.sha1(f"{images.shape}".encode() + np.ascontiguousarray(images).tobytes()
                        ).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run directory (its latest checkpoint) or a checkpoint")
    ap.add_argument("--ref", default="fashion-mnist:test", help="reference images")
    ap.add_argument("--pool", type=int, default=10_000, help="samples D chooses from")
    ap.add_argument("--n", type=int, default=2000, help="samples each rule keeps")
    ap.add_argument("--seed", type=int, default=123, help="the pool's latents")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="npz of the pool's features")
    ap.add_argument("--bn", choices=("running", "batch"), default="running",
                    help="D's BatchNorm: running statistics (eval mode) or each batch's")
    args = ap.parse_args()
    if not 2 <= args.n <= args.pool:
        raise GanforgeError(f"--n must be between 2 and --pool ({args.pool}), got {args.n}")
    if args.threads < 1 or args.seed < 0:
        raise GanforgeError("--threads must be at least 1 and --seed at least 0")
    cache = feature_cache.cache_file(args.cache)
    torch.set_num_threads(args.threads)
    cfg, variant, G, D, step, size, channels = load_nets(args.run)
    ds = data.resolve(args.ref, size=size, channels=channels, progress=False)
    real, key = reference_subset(ds, min(MAX_REAL, len(ds)))
    images = sample_pool(cfg, variant, G, args.pool, args.seed)
    d = logits(D, images, cfg.batch_size, args.bn)
    dr = logits(D, real, cfg.batch_size, args.bn)
    print(f"{args.run}: step {step}; BatchNorm statistics: {args.bn}; D's logit on "
          f"{len(d):,} samples of G_ema: mean "
          f"{d.mean():.2f} (sd {d.std():.2f}), on {len(dr):,} reference images: mean "
          f"{dr.mean():.2f} (sd {dr.std():.2f}); AUC {auc(dr, d):.3f}", flush=True)
    ex = FeatureExtractor(device="cpu", batch_size=50, progress=True)
    pool_key = digest(images)
    feats = feature_cache.load(cache, pool_key)
    if feats is None:
        feats = ex.extract(images, desc="pool features").features
        feature_cache.save(cache, feats, pool_key)
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
