"""Run under `torchrun --nproc_per_node 2` by tests/test_gpu_paths.py (gloo on CPU): checks the
gradient averaging of ganforge.train_utils.backward_step across processes and writes what each
rank saw to OUT/rank<r>.json."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from ganforge import distributed as dist_
from ganforge import losses
from ganforge.train_utils import backward_step


def digest(module: nn.Module) -> str:
    return dist_.digest({"m": module})


def critic() -> nn.Module:
    torch.manual_seed(0)  # the same weights on every rank
    return nn.Sequential(nn.Linear(12, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16),
                         nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Flatten(0))


def grads_of(module: nn.Module) -> list[list[float]]:
    return [p.grad.flatten().tolist() for p in module.parameters()]


def main(out: str) -> None:
    d, _ = dist_.init("cpu")  # as training joins (gloo), so the group is freed at the end
    torch.manual_seed(100 + d.rank)  # each rank its own data
    real, fake = torch.randn(8, 12), torch.randn(8, 12)
    result: dict[str, object] = {}

    # 1. bucketed all-reduce during backward (tiny buckets: several per module) gives the same
    #    averages as one flat all-reduce after it, also through the gradient penalty's double
    #    backward (whose inner autograd.grad must not trigger the hooks)
    off = torch.amp.GradScaler("cpu", enabled=False)
    for name, reducer_args in (("flat", None), ("buckets", (64, 128))):
        D = critic()
        opt = torch.optim.SGD(D.parameters(), lr=0.0)  # lr 0: look at the gradients only
        reducer = dist_.GradReducer(D, d, reducer_args) if reducer_args else None
        if reducer is not None:
            result["n_buckets"] = len(reducer.buckets)
        loss = D(fake).mean() - D(real).mean() + 10 * losses.gradient_penalty(D, real, fake)
        backward_step(loss, D, opt, off, d, reducer)
        result[f"grads_{name}"] = grads_of(D)

    # 2. fp16 loss scaling: an overflow on rank 1 only must make *both* ranks skip the step
    #    (the gradients are averaged before the inf check), and keep them identical
    D = critic()
    opt = torch.optim.Adam(D.parameters(), lr=1e-2, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    before = digest(D)
    loss = D(real).mean()
    if d.rank == 1:
        loss = loss * float("inf")
    _, skipped = backward_step(loss, D, opt, scaler, d, dist_.GradReducer(D, d))
    result["skip1"] = float(skipped)
    result["unchanged_after_skip"] = digest(D) == before
    result["scale_after_skip"] = scaler.get_scale()
    _, skipped = backward_step(D(real).mean(), D, opt, scaler, d, None)  # a normal step
    result["skip2"] = float(skipped)
    result["digest"] = digest(D)
    result["finite"] = all(bool(torch.isfinite(p).all()) for p in D.parameters())
    with open(os.path.join(out, f"rank{d.rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()  # leave together: a peer that exits mid-teardown aborts gloo (SIGABRT)
    dist_.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
