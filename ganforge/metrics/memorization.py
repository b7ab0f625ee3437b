"""Memorisation check: each generated image beside its nearest training images.

Nearness is Euclidean distance between Inception features, so a generated image that copies a
training image shows up with a near-zero distance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganforge import io
from ganforge.errors import GanforgeError
from ganforge.metrics.inception import to_nchw_uint8
from ganforge.metrics.scores import distance_block_rows


def nearest_training_images(
    fake_feats: np.ndarray, real_feats: np.ndarray, k: int = 1, batch: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """For each fake feature row, the indices ``[N, k]`` (int64) of its k nearest real rows and
    their Euclidean distances ``[N, k]`` (float64), nearest first. Computed in row blocks."""
    f = torch.from_numpy(np.asarray(fake_feats, np.float64))
    r = torch.from_numpy(np.asarray(real_feats, np.float64))
    if f.ndim != 2 or r.ndim != 2 or f.shape[1] != r.shape[1]:
        raise GanforgeError(f"feature arrays must be [N, D] with the same D, got "
                            f"{tuple(f.shape)} and {tuple(r.shape)}")
    if not 1 <= k <= len(r):
        raise GanforgeError(f"k must be between 1 and the {len(r)} training images, got {k}")
    r2 = (r * r).sum(1)
    batch = distance_block_rows(batch, len(r))  # bounded memory per distance block
    idx, dist = [], []
    for i in range(0, len(f), batch):
        q = f[i:i + batch]
        d2 = ((q * q).sum(1, keepdim=True) - 2.0 * q @ r.T + r2[None]).clamp_min_(0)
        vals, ind = d2.topk(k, dim=1, largest=False)
        idx.append(ind)
        dist.append(vals.sqrt())
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def _to_hwc3(images: np.ndarray) -> np.ndarray:
    x = to_nchw_uint8(torch.as_tensor(np.asarray(images)))  # [N, C, H, W]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def nearest_grid(
    fake_images: np.ndarray, real_images: np.ndarray, indices: np.ndarray, gap: int = 2
) -> np.ndarray:
    """uint8 RGB grid ``[rows*H, (1+k)*W, 3]``: row i is fake image i, a wider gap, then its k
    nearest training images ``real_images[indices[i]]`` in order."""
    fake, real = _to_hwc3(fake_images), _to_hwc3(real_images)
    idx = np.asarray(indices)
    if idx.ndim != 2 or len(idx) != len(fake):
        raise GanforgeError(f"indices must be [{len(fake)}, k], got {idx.shape}")
    if fake.shape[1:] != real.shape[1:]:
        raise GanforgeError(f"generated and training images differ in size: {fake.shape[1:]} vs "
                            f"{real.shape[1:]}")
    n, h, w, _ = fake.shape
    k = idx.shape[1]
    sep = 3 * gap  # set the generated column apart
    grid = np.full((n * (h + gap) - gap, w + sep + k * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        y = i * (h + gap)
        grid[y:y + h, :w] = fake[i]
        for j in range(k):
            x = w + sep + j * (w + gap)
            grid[y:y + h, x:x + w] = real[idx[i, j]]
    return grid


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 ``[H, W]`` or ``[H, W, 3]`` image as PNG atomically."""
    p = Path(path)
    with io.atomic_open(p) as f:
        Image.fromarray(np.ascontiguousarray(image)).save(f, format="PNG")
    return p


def write_nearest_grid(
    path: str | os.PathLike,
    fake_images: np.ndarray,
    real_images: np.ndarray,
    indices: np.ndarray,
) -> Path:
    """PNG pairing each generated image with its nearest training images (see
    :func:`nearest_grid`), written atomically. Returns the path."""
    return write_png_atomic(path, nearest_grid(fake_images, real_images, indices))


# -- during training: a cheap pixel-space check ---------------------------------------------

def _pixels(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, H, W, C] (or [N, C, H, W]) -> float64 [N, C*s*s] in [0, 1], area-averaged to
    s = min(size, H) pixels a side (small shifts and noise matter less at that scale)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = np.array(images)  # a memory-mapped cache: torch wants a writable array
    x = to_nchw_uint8(torch.as_tensor(np.ascontiguousarray(images))).double() / 255.0
    if x.shape[-1] > size:
        x = torch.nn.functional.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


def _squared_distances(query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Euclidean distances between rows."""
    return ((query * query).sum(1, keepdim=True) - 2.0 * query @ ref.T
            + (ref * ref).sum(1)[None]).clamp_min_(0)


class PixelMemorization:
    """How close generated images come to their nearest training image, relative to how close
    training images come to each other.

    `nn_dist`: the median, over generated images, of the root-mean-square pixel difference
    (pixels in [0, 1], images area-averaged to 32 px) to the nearest training image.
    `nn_ratio`: nn_dist divided by the same median for training images against the rest of
    the training set (leave one out; up to `max_ref` of them). About 1 or more: generated
    images are as new as a real image is to the others; far below 1 (< 0.5): G reproduces
    training images. Cheap (no network): it runs with every quick evaluation on small sets.
    """

    def __init__(self, train_images: np.ndarray, size: int = 32, max_ref: int = 1000,
                 seed: int = 0):
        self.size = size
        self.train = _pixels(train_images, size)  # [N, D]
        pick = torch.as_tensor(np.sort(
            np.random.default_rng(seed).permutation(len(self.train))[:max_ref]))
        d2 = _squared_distances(self.train[pick], self.train)
        d2[torch.arange(len(pick)), pick] = float("inf")  # not itself
        self.real_median = float((d2.min(1).values / self.train.shape[1]).sqrt().quantile(0.5))

    def distances(self, fake_images: np.ndarray) -> torch.Tensor:
        """RMS pixel difference of each generated image to its nearest training image [N]."""
        q = _pixels(fake_images, self.size)
        return (_squared_distances(q, self.train).min(1).values / q.shape[1]).sqrt()

    def __call__(self, fake_images: np.ndarray) -> dict[str, float]:
        dist = float(self.distances(fake_images).quantile(0.5))
        return {"nn_dist": dist, "nn_ratio": dist / max(self.real_median, 1e-12)}
