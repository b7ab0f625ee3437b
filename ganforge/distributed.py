"""Data-parallel training across processes with torch.distributed, launched by `torchrun`.

    torchrun --nproc_per_node 2 -m ganforge train --data DATA --variant wgan-gp --out RUN

The same command runs on one CPU, one GPU, several GPUs or several machines (`--nnodes`,
`--rdzv_backend c10d --rdzv_endpoint HOST:PORT`); the backend follows the device (NCCL on
GPUs, gloo on CPUs).

How the work is split: `batch_size` is the *global* batch. Every process draws the same global
permutation of the data and the same global latents, and takes its own slice of each (rank::world),
so N processes see exactly the images and latents one process would see, and the learning
rates stay as configured. The gradients are averaged across processes while the backward pass
runs: `GradReducer` all-reduces them in buckets, each started as soon as its gradients are
accumulated (as `DistributedDataParallel` does, but driven by per-parameter hooks rather than a
wrapper, so the gradient penalty's double backward, the generator step's frozen D and
`requires_grad_` toggling need no special cases); `overlap_grads=false` averages them with one
flat all-reduce after backward instead. Under fp16 loss scaling the scaled gradients are
averaged first and checked for inf/NaN after, so all processes skip a step together. Weights
stay identical on every process because every process applies the same averaged gradients; EMA
and weight clipping run identically everywhere. BatchNorm statistics are per process (rank 0's
are broadcast before every snapshot) unless `sync_bn=true` (SyncBatchNorm, GPUs). With CUDA each
process binds the GPU of its local rank (modulo the GPUs it sees, so one GPU bound per process
by a scheduler works too) and passes it to the process group as `device_id`. Only rank 0 writes
files.

Per-process state travels in checkpoints too: every process's RNG streams and its copy of the
modules that are not synced (CycleGAN's history pool), gathered to rank 0. The quick FID/KID
during training is shared the same way: every process generates and scores its slice of the
evaluation images, rank 0 gathers the features and computes the figures.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ganforge.errors import GanforgeError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device_name: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; returns (Dist, device name)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available() or \
        device_name.startswith("cuda")
    device_id = None
    if use_cuda:
        # torchrun gives each process its LOCAL_RANK; a scheduler that binds one GPU to each
        # process (SLURM, CUDA_VISIBLE_DEVICES per task) leaves each of them seeing one device,
        # number 0, whatever its local rank.
        visible = torch.cuda.device_count()
        if visible == 0:
            raise GanforgeError(f"device {device_name!r}: this process sees no CUDA GPU")
        device_id = torch.device("cuda", local_rank % visible)
        device_name = str(device_id)
        torch.cuda.set_device(device_id)
    if not dist.is_initialized():
        _bind_world_defaults_first()
        # device_id binds the NCCL communicator to this process's GPU at once (no guessing
        # from the current device, no lazy init on the first collective)
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device_id,
                                timeout=datetime.timedelta(minutes=10))
    return Dist(rank, world, local_rank), device_name


def _bind_world_defaults_first() -> None:
    """Import, before the process group exists, the torch module that training would import
    after it and that binds the group at import (torch 2.13; the torchrun teardown test in
    tests/test_distributed.py checks that no other does).

    `torch.distributed.nn.functional` declares `group=group.WORLD` as default arguments, which
    Python evaluates once, at import; torch 2.13 imports it lazily (the first `torch.optim`
    optimizer pulls in torch._dynamo, which imports it). Imported after `init_process_group`,
    those defaults hold the default group for the life of the process: `destroy_process_group`
    then cannot free it, and gloo's worker threads live on into interpreter shutdown, the
    likely cause of the SIGABRT ("terminate called without an active exception") that now and
    then killed a torchrun worker after its run had finished. Imported first, they hold None.
    """
    import torch.distributed.nn  # noqa: F401


def shutdown() -> None:
    """Leave the process group (also after an error: a group left behind keeps NCCL's
    resources and makes torch warn at exit)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(module: nn.Module, d: Dist) -> None:
    """Average the gradients of `module` across processes with one flat all-reduce."""
    if not d.enabled:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat.div_(d.world)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


BUCKET_BYTES = (1 << 20, 25 << 20)  # the first bucket, then every other (as DDP does)


class GradReducer:
    """Averages a module's gradients across processes *while* its backward pass runs.

    The parameters are split into buckets in reverse registration order (roughly the order
    backward produces their gradients); a bucket's all-reduce starts, asynchronously, as soon
    as all its gradients are accumulated (a post-accumulate-grad hook per parameter), so
    communication overlaps the rest of the backward pass, as in DistributedDataParallel. Buckets
    start strictly in order, so every process issues the same collectives in the same order.

    Unlike DDP this needs no special cases: hooks fire only when a parameter's `.grad` is
    accumulated, so the gradient penalty's inner `autograd.grad` (it accumulates nothing) and
    the G step's frozen D (no gradients) simply do not trigger them; and the reducer only acts
    between `arm()` and `finish()` (`ganforge.train_utils.backward_step`).
    """

    def __init__(self, module: nn.Module, d: Dist, bucket_bytes: tuple[int, int] = BUCKET_BYTES):
        self.d = d
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets: list[list[nn.Parameter]] = []
        size = 0
        for p in reversed(params):
            cap = bucket_bytes[0] if len(self.buckets) <= 1 else bucket_bytes[1]
            if not self.buckets or size >= cap:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self.hooks = [p.register_post_accumulate_grad_hook(self._ready) for p in params]
        self.armed = False

    def arm(self) -> None:
        """Start watching: the next backward pass launches the all-reduces."""
        self.waiting = [len(b) for b in self.buckets]
        self.launched = 0
        self.works: list[tuple[Any, list[nn.Parameter], torch.Tensor]] = []
        self.armed = True

    def _ready(self, p: nn.Parameter) -> None:
        if not self.armed:
            return
        self.waiting[self.bucket_of[id(p)]] -= 1
        while self.launched < len(self.buckets) and self.waiting[self.launched] == 0:
            self._launch()

    def _launch(self) -> None:
        params = [p for p in self.buckets[self.launched] if p.grad is not None]
        self.launched += 1
        if params:
            flat = torch.cat([p.grad.flatten() for p in params])
            self.works.append((dist.all_reduce(flat, async_op=True), params, flat))

    def finish(self) -> None:
        """After backward: launch the buckets still waiting (parameters that got no gradient
        this time), wait for all, and write the averages back into `.grad`."""
        while self.launched < len(self.buckets):
            self._launch()
        for work, params, flat in self.works:
            work.wait()
            flat.div_(self.d.world)
            offset = 0
            for p in params:
                n = p.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n
        self.works, self.armed = [], False


def all_reduce_mean(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / d.world).tolist()


def all_reduce_sum_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor across processes in place (a no-op in one process)."""
    if d.enabled:
        dist.all_reduce(t)
    return t


def broadcast_buffers(module: nn.Module, d: Dist) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics)."""
    if d.enabled:
        for b in module.buffers():
            dist.broadcast(b, 0)


def broadcast_object(obj: Any, d: Dist) -> Any:
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every process's `obj` (e.g. its RNG state), on every process."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any, d: Dist) -> list[Any] | None:
    """Every process's `obj` in rank order on rank 0, None on the others (the larger payloads:
    evaluation features, CycleGAN's pools). Tensors in `obj` should be on the CPU."""
    if not d.enabled:
        return [obj]
    out: list[Any] | None = [None] * d.world if d.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def digest(modules: dict[str, nn.Module]) -> str:
    """A hash of all parameters: equal on every process when they are in sync."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(modules):
        for p in modules[name].parameters():
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
