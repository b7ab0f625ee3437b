"""Quick FID/KID during training, and evaluation of a saved generator.

During training the same `n` latents (from a fixed seed) are scored at every evaluation against
a fixed random subset of `n` training images whose statistics are computed once and cached, so
the curve moves only because the generator moved.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ganforge.config import TrainConfig
from ganforge.data import Dataset
from ganforge.metrics.api import evaluate_images, metric_name
from ganforge.metrics.extract import FeatureExtractor
from ganforge.sample import to_uint8
from ganforge.variants.base import Variant


def reference_subset(ds: Dataset, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """A fixed random subset of n images (all if fewer) and its cache key."""
    if n <= 0 or n >= len(ds):
        return np.asarray(ds.images), ds.key
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return np.asarray(ds.images[idx]), f"{ds.key}-rand{seed}-{n}"


def generator_batches(G: nn.Module, variant: Variant, cfg: TrainConfig, n: int, seed: int,
                      device: torch.device, truncation: float = 1.0,
                      batch_size: int = 100) -> Callable[[int], np.ndarray]:
    """A `generate(k) -> uint8 [k, H, W, C]` callable drawing latents from a private seeded
    generator (the training RNG streams are not touched)."""
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(k: int) -> np.ndarray:
        z = variant.sample_z(k, cfg, generator=gen).to(device) * truncation
        was_training = G.training
        G.eval()
        out = to_uint8(G(z).float())
        G.train(was_training)
        return out

    return generate


class TrainingEvaluator:
    """FID and KID of `n` generated images vs `n` training images, the network loaded once."""

    def __init__(self, ds: Dataset, n: int, device: torch.device, progress: bool = False):
        self.n = n
        self.split = ds.split
        self.real, self.real_key = reference_subset(ds, n)
        self.extractor = FeatureExtractor(device=str(device), progress=progress)

    def __call__(self, G: nn.Module, variant: Variant, cfg: TrainConfig,
                 seed: int) -> dict:
        generate = generator_batches(G, variant, cfg, self.n, seed, next(G.parameters()).device)
        res = evaluate_images(generate, self.real, metrics=("fid", "kid"),
                              real_key=self.real_key, split=self.split, n_fake=self.n,
                              extractor=self.extractor, progress=False)
        res["fid"] = res[metric_name("fid", self.n, self.split)]
        res["kid"] = res[metric_name("kid", self.n, self.split)]
        return res
