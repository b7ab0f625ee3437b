"""Pieces of the training loop that hold no loop logic: the run lock, the minibatch sampler,
optimiser construction, gradient norms, EMA, and per-interval statistics."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge import distributed as dist_
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
        # The order is drawn on the CPU (the same batches on every device, and a generator
        # state a checkpoint can carry to any device), then moved to the data's device once per
        # epoch: a step slices it there and never copies indices from the host, which would
        # wait for all queued GPU work.
        self.epoch_state = self.gen.get_state()
        self.perm = torch.randperm(self.n, generator=self.gen).to(self.images.device)

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
        idx = (parts[0] if len(parts) == 1 else torch.cat(parts))[rank::world]
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


def sync_batchnorm(nets: dict[str, nn.Module], device: torch.device,
                   d: dist_.Dist) -> dict[str, nn.Module]:
    """sync_bn: G's and D's BatchNorm layers compute their statistics over the global batch
    (SyncBatchNorm; the same parameter and buffer names, so checkpoints do not change). In one
    process that is plain BatchNorm, so nothing is converted."""
    if not d.enabled:
        return nets
    if device.type != "cuda":
        raise GanforgeError("sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU kernel); "
                            "with several CPU processes leave it off")
    return {k: nn.SyncBatchNorm.convert_sync_batchnorm(m) if k in ("G", "D") else m
            for k, m in nets.items()}


def compile_nets(G: nn.Module, D: nn.Module, cfg: TrainConfig, progress: bool) -> None:
    """compile: torch.compile G and D in place (their parameters, state_dict keys and hooks
    stay those of the modules). D stays eager with a gradient penalty or R1: compiled graphs do
    not support their double backward."""
    G.compile()
    if cfg.gp_weight > 0 or cfg.r1_gamma > 0:
        if progress:
            print("compile: G compiled; D left eager (a gradient penalty needs a double "
                  "backward, which compiled graphs do not support)")
        return
    D.compile()


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


def backward_step(loss: torch.Tensor, module: nn.Module, opt: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler, d: dist_.Dist,
                  reducer: dist_.GradReducer | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward, average the gradients across processes, unscale, step.

    Returns the gradient norm and, with loss scaling (amp=fp16), whether the step was skipped
    (a float 0/1 tensor; else None). A skipped step is GradScaler's normal answer to an fp16
    overflow, not divergence: its norm is reported as 0, so the health monitor does not count
    it as non-finite. The gradients are averaged while still scaled and checked for inf/NaN
    after that, so every process unscales the same gradients and makes the same skip decision
    (checking before the all-reduce would let one process skip while another steps with the
    inf it received). Nothing here reads a value back to the host: fused Adam takes the
    scaler's found-inf flag on the device.
    """
    opt.zero_grad(set_to_none=True)
    if reducer is not None:
        reducer.arm()
    scaler.scale(loss).backward()
    if reducer is not None:
        reducer.finish()
    else:
        dist_.all_reduce_grads(module, d)
    scaler.unscale_(opt)
    norm = grad_norm(module)
    scaler.step(opt)
    scaler.update()
    if not scaler.is_enabled():
        return norm, None
    # unscale_ flags exactly the non-finite gradients, and so does their norm
    skipped = ~torch.isfinite(norm)
    return torch.where(skipped, torch.zeros_like(norm), norm), skipped.float()


def grad_norm(module: nn.Module) -> torch.Tensor:
    """The L2 norm of all of `module`'s gradients, a tensor on its device (no host sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay at G step `step` (0-based): `decay`, ramped up as (1 + t) / (10 + t) over
    the first steps, so the average does not keep the untrained initial weights for thousands
    of steps (at 0.999 and no ramp, 37 % of the average after 1,000 steps is the
    initialisation)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def standing_statistics(G: nn.Module, forward: Callable[[], Any], batches: int = 8) -> None:
    """Give an averaged generator BatchNorm statistics of its own (BigGAN's "standing
    statistics"): the running statistics copied from G belong to G's current weights, not to
    the averaged ones, and with them G_ema draws washed-out images until the two weights
    agree. Resets every BatchNorm of `G`, runs `forward()` (a G forward on fresh inputs)
    `batches` times in training mode with a cumulative average, and restores the modes."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training, momenta = G.training, [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    G.train()
    for _ in range(batches):
        forward()
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    G.train(was_training)


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    ema_p, p = list(G_ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_p, p, 1.0 - decay)
    ema_b, b = list(G_ema.buffers()), list(G.buffers())
    assert len(ema_b) == len(b)
    if b:
        torch._foreach_copy_(ema_b, b)  # one launch, not one per BatchNorm buffer


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
