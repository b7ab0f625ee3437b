"""Shared fixtures: small real data (a few hundred Fashion-MNIST images), isolated caches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (`make test` runs one worker per core) each worker gets an even share of
# the cores for torch, in its own process and in the CLI subprocesses it starts, instead of
# every worker starting a thread per core. Set before any test module imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)  # the cores this process may run on (taskset, cgroups)
    _SHARE = str(max(1, _CORES // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _SHARE)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Every test gets the same session cache, never the user's ~/.cache.
    cache = tmp_path_factory.getbasetemp() / "ganforge-cache"
    monkeypatch.setenv("GANFORGE_CACHE", str(cache))


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    """300 real Fashion-MNIST training images, prepared (28x28 gray)."""
    from ganforge import data

    out = tmp_path_factory.mktemp("fmnist300")
    data.prepare("fashion-mnist", out, limit=300, progress=False)
    return out


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory) -> Path:
    """A small folder of colour images made from real Fashion-MNIST items (tinted, 40x48,
    JPEG and PNG, in two sub-folders)."""
    from ganforge import data

    img_path, _ = data.fashion_mnist_files("test")
    items = data.read_idx(img_path)[:96]
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for i, im in enumerate(items):
        tint = rng.uniform(0.3, 1.0, size=3)
        rgb = (im[:, :, None].astype(np.float64) * tint + (1 - tint) * 40).astype(np.uint8)
        pil = Image.fromarray(rgb).resize((40, 48), Image.Resampling.BICUBIC)
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        pil.save(sub / f"item{i:03d}.{'jpg' if i % 3 else 'png'}")
    return root


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `ganforge` CLI in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ganforge", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def save_without_config_key(path: Path, key: str) -> None:
    """Rewrite a checkpoint as a release before `key` existed wrote it: its config lacks the
    key (and the header's digest matches again)."""
    import json

    from safetensors.torch import save as st_save

    from ganforge import checkpoint

    ck = checkpoint.load_checkpoint(path)
    meta = checkpoint._read_header(path, path.read_bytes())
    del meta["config"][key]
    meta["header_sha256"] = checkpoint._header_digest(meta)
    path.write_bytes(st_save(ck.tensors, metadata={"ganforge": json.dumps(meta)}))


class PixelFeatures:
    """Stands in for the Inception network in the run's quick evaluations: 64 pixel values as
    the features, so the trainer writes its eval records in milliseconds (a 2048-d FID takes
    seconds; the network and the figures have tests of their own)."""

    dtype, batch_size, stats_device, device = "pixels", 50, None, "cpu"

    def __init__(self, *args, **kwargs):
        pass

    def extract(self, images, n=None, desc=""):
        from ganforge.metrics.extract import Features, iter_batches

        x = np.concatenate([np.asarray(b) for b in iter_batches(images, 50, n)])
        return Features(x.reshape(len(x), -1)[:, ::12][:, :64].astype(np.float32))
