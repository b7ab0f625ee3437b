"""CycleGAN's history of generated images (Shrivastava et al. 2017): the discriminators see a
mix of current and earlier fakes, which damps oscillation. The pool's images live in buffers,
so they travel in checkpoints and a resumed run sees the same history. Under data-parallel
training every process keeps its own pool of the fakes made from its slice of the batch; the
checkpoint holds all of them (`Trainer.save` / `Trainer.restore`)."""

from __future__ import annotations

import torch
from torch import nn


class HistoryPool(nn.Module):
    """Two pools (domains `a` and `b`) of up to `size` images each."""

    def __init__(self, size: int, channels: int, image_size: int):
        super().__init__()
        self.size = size
        for side in ("a", "b"):
            self.register_buffer(f"images_{side}",
                                 torch.zeros(size, channels, image_size, image_size))
            self.register_buffer(f"count_{side}", torch.zeros((), dtype=torch.long))
        # the fill counts mirrored on the host: reading the buffers (on the GPU) for every
        # image would wait for all queued GPU work; they are read back once, on load
        self.filled = {"a": 0, "b": 0}
        self.register_load_state_dict_post_hook(HistoryPool._reread_counts)

    @staticmethod
    def _reread_counts(module: nn.Module, incompatible_keys: object) -> None:
        for side in ("a", "b"):
            module.filled[side] = int(getattr(module, f"count_{side}"))

    @torch.no_grad()
    def query(self, side: str, fake: torch.Tensor) -> torch.Tensor:
        """Fakes [N, C, H, W] -> what D is shown: while the pool fills, the fakes themselves;
        then each is, with probability 1/2, swapped for a random stored one (which it
        replaces). Uses torch's global (CPU) RNG, which checkpoints save; reads nothing back
        from the device."""
        if self.size == 0:
            return fake
        store: torch.Tensor = getattr(self, f"images_{side}")
        count: torch.Tensor = getattr(self, f"count_{side}")
        out = fake.clone()
        for i in range(fake.shape[0]):
            n = self.filled[side]
            if n < self.size:
                store[n] = fake[i]
                count += 1
                self.filled[side] = n + 1
            elif float(torch.rand(())) < 0.5:
                j = int(torch.randint(0, self.size, ()))
                out[i] = store[j]
                store[j] = fake[i]
        return out
