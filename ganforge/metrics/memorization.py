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
