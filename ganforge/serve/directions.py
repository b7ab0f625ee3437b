"""Latent directions, GANSpace-style (Härkönen et al. 2020, the recipe for non-StyleGAN nets).

1. Sample N latents z and record the generator's features at an early layer (the output of
   its first block, through a forward hook; the output image when there is no such block).
2. PCA of those features: the top-k principal axes and the share of variance each explains.
3. Transfer the axes to z: least squares from the PCA coordinates x [N, k] back to z [N, D]
   (z ~ x U), so row i of U is the move in z that changes coordinate i by one unit; each row
   is normalised, so moving by t along it moves z by t standard deviations of the prior.

The result depends only on the weights, so it is computed once per checkpoint and cached
beside its run as `explorer/directions-<hash>.npy`: an array [k, 1 + z_dim] whose first
column is the explained-variance share and the rest the unit direction.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganforge import io
from ganforge.errors import GanforgeError
from ganforge.sample import LoadedGenerator

N_SAMPLES = 2000
N_DIRECTIONS = 6
SEED = 1234
VERSION = 1  # bump when the recipe changes, so old caches are not reused


@dataclass
class Directions:
    vectors: np.ndarray  # [k, z_dim], unit rows
    explained: np.ndarray  # [k], share of the feature variance of each principal axis
    layer: str
    cache_path: Path | None

    def to_json(self) -> dict:
        return {
            "layer": self.layer, "samples": N_SAMPLES,
            "directions": [{"name": f"direction {i + 1}", "explained": round(float(e), 6),
                            "vector": [round(float(v), 6) for v in vec]}
                           for i, (vec, e) in enumerate(zip(self.vectors, self.explained,
                                                            strict=True))],
        }


class _Stop(Exception):
    """Raised by the hook: nothing after the feature layer needs to run."""


def feature_layer(G: nn.Module) -> tuple[str, nn.Module | None]:
    """The layer whose output is analysed: the first block when the net has one."""
    first = getattr(G, "project", None)  # the DCGAN family's z -> base grid block
    if isinstance(first, nn.Module):
        return "project", first
    return "output", None


@torch.inference_mode()
def features(gen: LoadedGenerator, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Features [N, F] of the analysed layer for latents z [N, z_dim]."""
    _, layer = feature_layer(gen.G)
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: object, output: torch.Tensor) -> None:
        got.append(output.flatten(1).float().cpu())
        raise _Stop

    handle = layer.register_forward_hook(hook) if layer is not None else None
    try:
        for i in range(0, len(z), batch_size):
            zb = z[i:i + batch_size].to(gen.device)
            # a conditional G: the directions are found over all classes in turn
            args = (zb,) if gen.kind != "conditional" else (
                zb, torch.arange(len(zb), device=gen.device) % len(gen.classes))
            if layer is None:
                got.append(gen.G(*args).flatten(1).float().cpu())
                continue
            with contextlib.suppress(_Stop):
                gen.G(*args)
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(got)


@torch.no_grad()
def compute(gen: LoadedGenerator, n: int = N_SAMPLES, k: int = N_DIRECTIONS,
            seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(unit directions [k, z_dim], explained-variance shares [k])."""
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    feats = features(gen, z)
    feats = feats - feats.mean(0, keepdim=True)
    total = float(feats.double().pow(2).sum())
    k = min(k, gen.z_dim, n - 1, feats.shape[1])
    # A randomised truncated SVD: only the top k axes are needed, and F can be 10^4 or more.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # svd_lowrank draws a random projection: keep it repeatable
        U_f, S, _ = torch.svd_lowrank(feats, q=min(k + 10, *feats.shape), niter=4)
    U_f, S = U_f[:, :k], S[:k]
    coords = (U_f * S).double()  # [n, k]: each sample's projection on the principal axes
    U = torch.linalg.lstsq(coords, z.double()).solution  # [k, z_dim]: coords -> z
    U = U / U.norm(dim=1, keepdim=True).clamp_min(1e-12)
    explained = S.double().pow(2) / max(total, 1e-12)
    return U.float().numpy(), explained.float().numpy()


def cache_path(gen: LoadedGenerator) -> Path:
    """`<run>/explorer/directions-<hash>.npy`; the hash covers the checkpoint's bytes, the
    weights used (EMA or not) and the recipe."""
    h = hashlib.sha256()
    with open(gen.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(f"|ema={gen.ema}|n={N_SAMPLES}|k={N_DIRECTIONS}|seed={SEED}|v={VERSION}".encode())
    ckpt_dir = gen.path.parent
    run_dir = ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
    return run_dir / "explorer" / f"directions-{h.hexdigest()[:16]}.npy"


def load_or_compute(gen: LoadedGenerator) -> Directions:
    """The cached directions of this checkpoint, computing (and caching) them if needed."""
    layer = feature_layer(gen.G)[0]
    path = cache_path(gen)
    try:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 2 and arr.shape[1] == gen.z_dim + 1 and np.isfinite(arr).all():
            return Directions(arr[:, 1:], arr[:, 0], layer, path)
    except (OSError, ValueError):
        pass  # no cache yet, or an unreadable one: recompute
    vectors, explained = compute(gen)
    try:
        io.write_npy(path, np.concatenate([explained[:, None], vectors], axis=1))
    except (OSError, GanforgeError):
        path = None  # a read-only or full disk: serve without caching
    return Directions(vectors, explained, layer, path)
