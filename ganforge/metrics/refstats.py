"""Cached reference statistics of a real dataset.

A reference entry holds mu (float64), sigma (float64) and, for n up to
:data:`FEATURE_CACHE_CAP`, the float32 features that KID and precision/recall need. It is keyed
by everything that changes it: the dataset's content hash, the split, n, the protocol version,
the compute precision and the kind of device (CPU and GPU features differ by float rounding, so
their statistics are not mixed). Files are ``.npz`` (no pickle) written atomically: a temp file
in the same directory, fsync, ``os.replace``; a crash leaves the old entry or none, never half a
file.

Cache directory: ``cache_dir`` argument, else ``$GANFORGE_CACHE/refstats``, else
``~/.cache/ganforge/refstats``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganforge import io
from ganforge.errors import GanforgeError
from ganforge.metrics.inception import PROTOCOL_VERSION

# Features of up to this many images are cached with the statistics (50k x 2048 float32 = 400 MB
# would be too much to keep per dataset; 20k is 160 MB).
FEATURE_CACHE_CAP = 20_000


@dataclass
class RefStats:
    """Reference statistics of ``n`` real images."""

    mu: np.ndarray  # [2048] float64
    sigma: np.ndarray  # [2048, 2048] float64
    n: int
    features: np.ndarray | None = None  # [n, 2048] float32 when n <= FEATURE_CACHE_CAP
    key: dict | None = None


def default_cache_dir() -> Path:
    """``$GANFORGE_CACHE/refstats`` if set, else ``~/.cache/ganforge/refstats``."""
    root = os.environ.get("GANFORGE_CACHE")
    if root:
        return Path(root).expanduser() / "refstats"
    return Path.home() / ".cache" / "ganforge" / "refstats"


def cache_key(
    dataset_hash: str,
    split: str,
    n: int,
    protocol_version: str = PROTOCOL_VERSION,
    precision: str = "float32",
    device: str = "cpu",
) -> dict:
    """The fields that identify a reference entry (all of them are stored in the file).
    `device` counts by kind (`cuda:1` is `cuda`)."""
    if not dataset_hash or not isinstance(dataset_hash, str):
        raise GanforgeError("a reference cache key needs the dataset content hash (a string)")
    return {
        "dataset_hash": dataset_hash,
        "split": str(split),
        "n": int(n),
        "protocol_version": protocol_version,
        "precision": precision,
        "device": str(device).split(":")[0],
    }


def cache_path(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """File of a key: ``<dir>/<split>-n<n>-<sha256 of the key>.npz``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in key["split"])
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{safe_split}-n{key['n']}-{digest}.npz"


def load_reference(key: dict, cache_dir: str | os.PathLike | None = None) -> RefStats | None:
    """The cached entry for ``key``, or None when absent, unreadable, or stored for another key."""
    path = cache_path(key, cache_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key = json.loads(str(z["key"]))
            if stored_key != key:
                return None
            feats = z["features"] if "features" in z.files else None
            return RefStats(z["mu"], z["sigma"], int(stored_key["n"]), feats, stored_key)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None  # a damaged entry is recomputed and overwritten


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with io.atomic_open(path) as f:
        np.savez(f, **arrays)


def save_reference(ref: RefStats, key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``ref`` under ``key`` atomically; features are kept only up to the cap."""
    arrays = {
        "mu": np.asarray(ref.mu, np.float64),
        "sigma": np.asarray(ref.sigma, np.float64),
        "key": np.array(json.dumps(key, sort_keys=True)),
    }
    if ref.features is not None and len(ref.features) <= FEATURE_CACHE_CAP:
        arrays["features"] = np.asarray(ref.features, np.float32)
    path = cache_path(key, cache_dir)
    _atomic_savez(path, arrays)
    return path


def reference_stats(
    images: np.ndarray,
    dataset_hash: str,
    split: str,
    n: int | None = None,
    protocol_version: str = PROTOCOL_VERSION,
    *,
    extractor=None,
    cache_dir: str | os.PathLike | None = None,
) -> RefStats:
    """Reference statistics of the first ``n`` images of ``images`` (uint8 [N, H, W, C]),
    loaded from the cache when present, else computed and cached.

    ``extractor`` is a :class:`~ganforge.metrics.extract.FeatureExtractor` (a default one is made
    when None); its precision and kind of device are part of the key.
    """
    from ganforge.metrics.extract import FeatureExtractor
    from ganforge.metrics.scores import feature_stats

    total = len(images)
    n = total if n is None else int(n)
    if not 2 <= n <= total:
        raise GanforgeError(f"reference statistics of n={n} images asked, the {split} split "
                            f"given has {total} (need 2 <= n <= {total})")
    extractor = extractor or FeatureExtractor()
    key = cache_key(dataset_hash, split, n, protocol_version, extractor.dtype,
                    getattr(extractor, "device", "cpu"))
    hit = load_reference(key, cache_dir)
    if hit is not None and (hit.features is not None or n > FEATURE_CACHE_CAP):
        return hit
    if protocol_version != PROTOCOL_VERSION:
        raise GanforgeError(f"no cached statistics for protocol {protocol_version!r}, and this "
                            f"ganforge computes only {PROTOCOL_VERSION!r}")
    feats = extractor.extract(images[:n], desc=f"reference {split}").features
    mu, sigma = feature_stats(feats, device=getattr(extractor, "stats_device", None))
    ref = RefStats(mu, sigma, n, feats, key)
    save_reference(ref, key, cache_dir)
    return ref
