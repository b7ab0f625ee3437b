"""What FID does a perfect generator score? Real training images against the reference set.

N training images drawn at random (seed `--seed`) stand in for the samples of a generator
that draws exactly from the data, and are scored against the reference images as `evaluate`
scores samples (the same Inception protocol, the same cached reference statistics). FID of a
finite sample is biased upwards, the more so the smaller N is, so this is what a generator
that draws from the data scores at that N (one draw of it; the bias also depends on the
samples' covariance, so it is an expected level, not a bound): for Fashion-MNIST, the line
N = 5000 is the level of `fid5k_test` (5,000 samples against the 10,000 test images). The
features of the largest N are computed once and each smaller N takes a random subset of them
(seeded); `--cache FILE.npz` keeps them (with the key of the images drawn) for a rerun.

    python bench/fid_floor.py --data fashion-mnist --ref fashion-mnist:test --n 2000,5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ganforge import data
from ganforge.errors import GanforgeError
from ganforge.evaluate import MAX_REAL, set_name
from ganforge.metrics import FeatureExtractor
from ganforge.metrics.refstats import reference_stats
from ganforge.metrics.scores import feature_stats, fid_from_stats
from ganforge.metrics.training import reference_subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feature_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist", help="the images standing in for samples")
    ap.add_argument("--ref", default="fashion-mnist:test", help="reference images")
    ap.add_argument("--n", default="2000,5000", help="comma list of sample counts")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1, help="which training images are drawn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="npz of the drawn images' features")
    args = ap.parse_args()
    try:
        counts = sorted(int(s) for s in args.n.split(","))
    except ValueError:
        raise GanforgeError(f"--n: a comma list of counts, got {args.n!r}") from None
    if args.threads < 1 or args.seed < 0:
        raise GanforgeError("--threads must be at least 1 and --seed at least 0")
    cache = feature_cache.cache_file(args.cache)
    torch.set_num_threads(args.threads)
    ds = data.resolve(args.data, size=args.size, channels=args.channels, progress=False)
    if not 2 <= counts[0] <= counts[-1] < len(ds):
        raise GanforgeError(f"--n: counts between 2 and {len(ds) - 1:,} ({args.data} holds "
                            f"{len(ds):,} images), got {args.n!r}")
    ref_ds = data.resolve(args.ref, size=args.size, channels=args.channels, progress=False)
    real, key = reference_subset(ref_ds, min(MAX_REAL, len(ref_ds)))
    ex = FeatureExtractor(device="cpu", batch_size=50, progress=True)
    ref = reference_stats(real, key, set_name(args.ref, ref_ds), extractor=ex)
    drawn, drawn_key = reference_subset(ds, counts[-1], seed=args.seed)
    feats = feature_cache.load(cache, drawn_key)  # drawn_key: content hash, seed, count
    if feats is None:
        feats = ex.extract(drawn, desc=f"{args.data} features").features
        feature_cache.save(cache, feats, drawn_key)
    # reference_subset returns its images in index order: a smaller N takes a random subset
    order = np.random.default_rng(args.seed).permutation(len(feats))
    for n in counts:
        mu, sigma = feature_stats(feats[np.sort(order[:n])] if n < len(feats) else feats)
        print(f"{n:,} images of {args.data} (seed {args.seed}) against {len(real):,} of "
              f"{args.ref}: FID {fid_from_stats(mu, sigma, ref.mu, ref.sigma):.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except GanforgeError as e:
        sys.exit(f"error: {e}")
