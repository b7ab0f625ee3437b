"""Everything random or stateful a training run must carry across a resume besides its weights
and optimisers, as one object with one save/load pair: the data samplers, the generator-input
(latent) stream, torch's global RNGs, the fp16 loss scaler, and the modules each process keeps
for itself (CycleGAN's history pool).

Saved state is device-independent: samplers draw on the CPU, and the latent stream is a counter
(draw i uses a generator seeded from (seed, i)) rather than a generator state, whose size and
meaning differ per device (16 bytes of Philox seed and offset on CUDA, 5,056 bytes of Mersenne
Twister on the CPU). A run resumes on another device; on the same one, bit-exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge import distributed as dist_
from ganforge.train_utils import BatchSampler

_MASK64 = (1 << 64) - 1


def _mix(seed: int, i: int) -> int:
    """splitmix64 of (seed, i): well-spread 63-bit seeds for consecutive draws."""
    x = (seed * 0x9E3779B97F4A7C15 + i + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1


class NoiseStream:
    """The random stream of generator inputs (latents, class labels) on the training device.

    `next()` gives the generator for the next draw: draw i is seeded from (seed, i), so the
    stream's state is two integers and reseeding costs no host-device synchronisation."""

    def __init__(self, seed: int, device: torch.device):
        self.seed, self.draws = seed, 0
        self.gen = torch.Generator(device=device)

    def next(self) -> torch.Generator:
        self.gen.manual_seed(_mix(self.seed, self.draws))
        self.draws += 1
        return self.gen

    def state(self) -> torch.Tensor:
        return torch.tensor([self.seed, self.draws], dtype=torch.int64)

    def load(self, t: torch.Tensor) -> None:
        if t.dtype != torch.int64 or t.shape != (2,):
            # a checkpoint from before the stream was a counter held a device generator's
            # state: continue with a fresh stream rather than fail
            self.draws = 0
            return
        self.seed, self.draws = int(t[0]), int(t[1])


class RunState:
    """The run's state outside weights and optimisers (see the module docstring).

    `modules` and `synced` are the trainer's dicts (read at save/load time): the modules in
    `modules` but not in `synced` are per process. Every process must call `state_dict` (it
    gathers every process's part to rank 0) and `load_state_dict`.
    """

    def __init__(self, samplers: list[BatchSampler], noise: NoiseStream,
                 scaler: torch.amp.GradScaler, modules: dict[str, nn.Module],
                 synced: dict[str, nn.Module], d: dist_.Dist, device: torch.device):
        self.samplers, self.noise, self.scaler = samplers, noise, scaler
        self.modules, self.synced = modules, synced
        self.dist, self.device = d, device

    def per_process(self) -> dict[str, nn.Module]:
        return {k: m for k, m in self.modules.items() if k not in self.synced}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, plain JSON values) for the checkpoint; on rank 0 they hold every
        process's RNG states and per-process modules (rank r's as `<name>_rank<r>.*`)."""
        d = self.dist
        tensors: dict[str, torch.Tensor] = {"rng.noise": self.noise.state()}
        plain: dict[str, Any] = {}
        for i, s in enumerate(self.samplers):
            pos, epoch_state = s.state()
            plain["sampler" if i == 0 else f"sampler_{i}"] = pos
            tensors["rng.data_epoch" if i == 0 else f"rng.data_epoch.{i}"] = epoch_state
        rng = dist_.gather_object(torch.get_rng_state(), d)
        tensors["rng.torch"] = rng[0]
        tensors.update({f"rng.torch.rank{r}": t for r, t in enumerate(rng) if r})
        if self.device.type == "cuda":
            cuda_rng = dist_.gather_object(torch.cuda.get_rng_state(self.device), d)
            tensors.update({f"rng.cuda.rank{r}": t for r, t in enumerate(cuda_rng)})
        plain["scaler"] = self.scaler.state_dict() if self.scaler.is_enabled() else None
        for name, m in self.per_process().items():
            state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
            for r, sd in enumerate(dist_.gather_to_main(state, d) or []):
                prefix = name if r == 0 else f"{name}_rank{r}"
                tensors.update({f"{prefix}.{k}": v for k, v in sd.items()})
        return tensors, plain

    def load_state_dict(self, tensors: dict[str, torch.Tensor], plain: dict[str, Any],
                        load_module: Any = None) -> None:
        """Restore from a checkpoint's tensors and plain state. `load_module(module, prefix)`
        loads a module from the checkpoint (Checkpoint.load_module: clear errors)."""
        rank = self.dist.rank
        for i, s in enumerate(self.samplers):
            s.restore(plain["sampler" if i == 0 else f"sampler_{i}"],
                      tensors["rng.data_epoch" if i == 0 else f"rng.data_epoch.{i}"])
        self.noise.load(tensors["rng.noise"])
        torch.set_rng_state(tensors.get(f"rng.torch.rank{rank}", tensors["rng.torch"])
                            if rank else tensors["rng.torch"])
        cuda_rng = tensors.get(f"rng.cuda.rank{rank}")
        if self.device.type == "cuda" and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)
        if self.scaler.is_enabled() and plain.get("scaler"):
            self.scaler.load_state_dict(plain["scaler"])
        saved_rank = rank % int(plain.get("world", 1))
        for name, m in self.per_process().items():
            # each process resumes its own. With another number of processes, process r takes
            # saved process r % saved_world's (a full history rather than an empty one; two
            # copies of one diverge with the next fakes); a checkpoint holding rank 0's only
            # gives that one to all.
            prefix = name
            if saved_rank and any(k.startswith(f"{name}_rank{saved_rank}.") for k in tensors):
                prefix = f"{name}_rank{saved_rank}"
            if load_module is not None:
                load_module(m, prefix)
            else:
                m.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                                   if k.startswith(prefix + ".")})
