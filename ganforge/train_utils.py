"""Pieces of the training loop that hold no loop logic: the run lock, the minibatch sampler,
optimiser construction, gradient norms, EMA, and per-interval statistics."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError


class RunLock:
    """An exclusive lock on a run directory; the OS drops it if the process dies."""

    def __init__(self, run_dir: Path):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(run_dir / "train.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GanforgeError(f"cannot use {run_dir} as a run directory: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise GanforgeError(f"{run_dir} is in use by another training process") from None

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class BatchSampler:
    """Draws minibatches from a dict of equally long tensors (uint8 images [N, C, H, W],
    int64 labels [N], ...) in a reshuffled order each epoch; images come out in [-1, 1].

    Its state (generator state at the start of the epoch, epoch, position) is saved in the
    checkpoint, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, tensors: dict[str, torch.Tensor] | torch.Tensor, seed: int,
                 memory_format: torch.memory_format = torch.contiguous_format):
        if isinstance(tensors, torch.Tensor):
            tensors = {"real": tensors}
        self.tensors = tensors  # on the training device
        self.memory_format = memory_format
        lengths = {len(t) for t in tensors.values()}
        assert len(lengths) == 1, f"tensors of different lengths {lengths}"
        self.n = lengths.pop()
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.pos = 0, 0
        self._new_epoch()

    @property
    def images(self) -> torch.Tensor:
        """The first image tensor (uint8 [N, C, H, W])."""
        return next(t for t in self.tensors.values() if t.ndim == 4)

    def _new_epoch(self) -> None:
        self.epoch_state = self.gen.get_state()
        self.perm = torch.randperm(self.n, generator=self.gen)

    def next(self, n: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """The next global batch of n items, or this process's slice of it (rank::world)."""
        parts = []
        while n > 0:
            if self.pos == len(self.perm):
                self.epoch, self.pos = self.epoch + 1, 0
                self._new_epoch()
            take = min(n, len(self.perm) - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos, n = self.pos + take, n - take
        idx = torch.cat(parts)[rank::world].to(self.images.device)
        out = {}
        for k, t in self.tensors.items():
            x = t[idx]
            # images [n, C, H, W] in [-1, 1]; labels as they are
            if t.dtype == torch.uint8:
                x = x.to(torch.float32, memory_format=self.memory_format).div_(127.5).sub_(1.0)
            out[k] = x
        return out

    def state(self) -> tuple[dict[str, int], torch.Tensor]:
        return {"epoch": self.epoch, "pos": self.pos}, self.epoch_state

    def restore(self, s: dict[str, int], epoch_state: torch.Tensor) -> None:
        self.gen.set_state(epoch_state)
        self._new_epoch()
        self.epoch, self.pos = s["epoch"], s["pos"]


def make_optimizer(cfg: TrainConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam (or RMSprop) with its fused kernel where this torch has one for the device: one
    pass over all parameters instead of a dozen small ops per tensor."""
    params = list(params)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    try:
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    except RuntimeError:  # no fused Adam for this device in this torch
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    ema_p, p = list(G_ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_p, p, 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


@dataclass
class Stats:
    """Per-interval sums of tensors; read back to the host once per log line."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist()
        out = {k: v / self.counts[k] for k, v in zip(keys, values, strict=True)}
        self.sums, self.counts = {}, {}
        return out
