"""Quick FID/KID during training, and evaluation of a saved generator.

During training the same `n` latents (from a fixed seed) are scored at every evaluation against
a fixed random subset of `n` training images whose statistics are computed once and cached, so
the curve moves only because the generator moved.

Under data-parallel training every process generates and scores (Inception features) its slice
rank, rank + world, ... of the same `n` inputs one process would use; rank 0 gathers the
features back into their global order and computes the figures, so N processes score the same
images as one (equal up to float noise in G's forward on batches of another size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ganforge import distributed as dist_
from ganforge.config import TrainConfig
from ganforge.data import Dataset
from ganforge.metrics.api import metric_name
from ganforge.metrics.extract import FeatureExtractor
from ganforge.metrics.inception import FEATURE_DIM, PROTOCOL
from ganforge.metrics.refstats import reference_stats
from ganforge.metrics.scores import feature_stats, fid_from_stats, kid
from ganforge.sample import to_uint8
from ganforge.variants.base import Variant


def reference_subset(ds: Dataset, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """A fixed random subset of n images (all if fewer) and its cache key."""
    if n <= 0 or n >= len(ds):
        return np.asarray(ds.images), ds.key
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return np.asarray(ds.images[idx]), f"{ds.key}-rand{seed}-{n}"


@torch.no_grad()
def _render(G: nn.Module, z: torch.Tensor, c: torch.Tensor | None = None) -> np.ndarray:
    """G(z) (or G(z, c)) in eval mode as uint8 [N, H, W, C]."""
    was_training = G.training
    G.eval()
    out = to_uint8((G(z) if c is None else G(z, c)).float())
    G.train(was_training)
    return out


def generator_batches(G: nn.Module, variant: Variant, cfg: TrainConfig, n: int, seed: int,
                      device: torch.device, truncation: float = 1.0,
                      batch_size: int = 100) -> Callable[[int], np.ndarray]:
    """A `generate(k) -> uint8 [k, H, W, C]` callable drawing latents from a private seeded
    generator (the training RNG streams are not touched)."""
    gen = torch.Generator().manual_seed(seed)

    def generate(k: int) -> np.ndarray:
        return _render(G, variant.sample_z(k, cfg, generator=gen).to(device) * truncation)

    return generate


def eval_inputs(variant: Variant, cfg: TrainConfig, n: int, seed: int, chunk: int,
                n_classes: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The n generator inputs of a training evaluation, in order: latents [n, z_dim] drawn
    `chunk` at a time from a private generator seeded with `seed` (the training RNG streams are
    not touched) and, with n_classes, labels [n] cycling 0, 1, ... within each chunk: the
    inputs one process drew when it generated `chunk` images per call, so its figures stay."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [min(chunk, n - i) for i in range(0, n, chunk)]
    z = torch.cat([variant.sample_z(k, cfg, generator=gen) for k in sizes])
    c = torch.cat([torch.arange(k) % n_classes for k in sizes]) if n_classes else None
    return z, c


class TrainingEvaluator:
    """FID and KID of `n` generated images vs `n` training images, the network loaded once.
    With `dist` (data-parallel training) every process must call it; rank 0 gets the figures,
    the others None."""

    def __init__(self, ds: Dataset, n: int, device: torch.device, progress: bool = False,
                 dist: dist_.Dist | None = None):
        self.n = n
        self.split = ds.split
        self.dist = dist or dist_.Dist()
        self.real, self.real_key = reference_subset(ds, n)
        self.extractor = FeatureExtractor(device=str(device), progress=progress)

    def __call__(self, G: nn.Module, variant: Variant, cfg: TrainConfig, seed: int,
                 n_classes: int = 0) -> dict | None:
        """Score G (conditional with n_classes > 0: every class equally often)."""
        rank, world = self.dist.rank, self.dist.world
        device = next(G.parameters()).device
        chunk = self.extractor.batch_size
        z, c = eval_inputs(variant, cfg, self.n, seed, chunk, n_classes)
        z = z[rank::world]  # this process's slice of the global sequence
        c = c[rank::world] if c is not None else None

        def batches() -> Iterator[np.ndarray]:
            for i in range(0, len(z), chunk):
                yield _render(G, z[i:i + chunk].to(device),
                              c[i:i + chunk].to(device) if c is not None else None)

        mine = (self.extractor.extract(batches(), n=len(z), desc="generated").features
                if len(z) else np.empty((0, FEATURE_DIM), np.float32))
        parts = dist_.gather_to_main(mine, self.dist)
        if parts is None:
            return None
        fake = np.empty((self.n, FEATURE_DIM), np.float32)  # [n, 2048] in the global order
        for r, part in enumerate(parts):
            fake[r::world] = part
        return self.scores(fake)

    def scores(self, fake: np.ndarray) -> dict:
        """FID and KID of generated features [n, 2048] against the reference subset, under
        their protocol names (`fid250_train`) and as `fid` / `kid`, as `evaluate_images`
        reports them."""
        ex, n = self.extractor, len(fake)
        ref = reference_stats(self.real, self.real_key, self.split, extractor=ex)
        if ref.features is None:  # n above the feature-cache cap
            ref.features = ex.extract(self.real, desc=f"real ({self.split})").features
        subsets, subset_size = 100, 1000
        dev = ex.stats_device  # the GPU's float64 where the features were made there
        fid = fid_from_stats(*feature_stats(fake, device=dev), ref.mu, ref.sigma, device=dev)
        kid_mean, kid_std = kid(fake, ref.features, subsets, subset_size, device=dev)
        fid_name, kid_name = metric_name("fid", n, self.split), metric_name("kid", n, self.split)
        return {"n_real": ref.n, fid_name: fid, kid_name: kid_mean, kid_name + "_std": kid_std,
                "n_fake": n, "split": self.split, "protocol": PROTOCOL, "dtype": ex.dtype,
                "kid_subsets": subsets, "kid_subset_size": min(subset_size, n, ref.n),
                "fid": fid, "kid": kid_mean}
