"""A minimal reader for MNIST-format idx image files (used by the metric tests and benchmark).

ganforge.data has the full dataset reader; this one keeps the metrics self-contained.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ganforge.errors import GanforgeError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx_images(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """uint8 images ``[N, H, W, 1]`` from an idx3-ubyte file (optionally gzip-compressed)."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        header = f.read(16)
        if len(header) < 16 or header[:4] != b"\x00\x00\x08\x03":
            raise GanforgeError(f"{p} is not an idx3 uint8 image file")
        n, h, w = (int(v) for v in np.frombuffer(header[4:], ">u4"))
        n = n if limit is None else min(n, limit)
        data = f.read(n * h * w)
    if len(data) != n * h * w:
        raise GanforgeError(f"{p} is truncated: expected {n * h * w} bytes of pixels")
    return np.frombuffer(data, np.uint8).reshape(n, h, w, 1).copy()


def fashion_mnist(split: str = "test", limit: int | None = None,
                  root: str | os.PathLike = FASHION_MNIST_DIR) -> np.ndarray:
    """Fashion-MNIST images from the Debian package ``dataset-fashion-mnist``."""
    name = {"train": "train", "test": "t10k"}[split]
    return read_idx_images(Path(root) / f"{name}-images-idx3-ubyte.gz", limit)
