"""Micro-batching of single-image requests onto one generator.

Every piece of model work runs on one dedicated thread (`ModelRunner`), so the event loop
never blocks on torch and two forward passes never fight over the CPU's cores. Single-image
requests go through a `MicroBatcher`: one asyncio task takes the first waiting request,
collects the others that arrive within a short window (or until `max_batch`), runs one
forward pass for all of them on the model thread and resolves each request's future. With
batching off (the benchmark's baseline) each request is its own forward pass on the same
thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ganforge.sample import LoadedGenerator, png_bytes

T = TypeVar("T")
ENV_SWITCH = "GANFORGE_SERVE_MICROBATCH"  # "0" turns micro-batching off


def microbatch_from_env(default: bool = True) -> bool:
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return default


class ModelRunner:
    """Runs callables on the single model thread and awaits them from the event loop."""

    def __init__(self, gen: LoadedGenerator):
        self.gen = gen
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ganforge-model")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def images_png(self, z: torch.Tensor, c: torch.Tensor | None = None) -> list[bytes]:
        """Pre-truncated latents [N, z_dim] (and classes [N] for a conditional model) -> one
        PNG per row (runs on the model thread)."""
        return [png_bytes(im) for im in self.gen.generate(z, 1.0, c=c)]


@dataclass
class _Job:
    z: torch.Tensor  # [z_dim], already multiplied by the truncation psi
    future: asyncio.Future[bytes]
    c: int | None = None  # the class of a conditional model
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesces concurrent single-image requests into batched forward passes.

    The worker takes every waiting request; when the traffic is concurrent (this batch or
    the previous one had more than one request) it also waits for more until `window_s` after
    the oldest one's arrival, so a request that already waited while the model was busy is
    not delayed further. A lone user pays no window at all.
    """

    def __init__(self, runner: ModelRunner, *, enabled: bool = True, window_s: float = 0.004,
                 max_batch: int = 64):
        self.runner = runner
        self.enabled = enabled
        self.window_s = window_s
        self.max_batch = max_batch
        self.batches = self.images = self.largest = 0  # for /api/info and the benchmark
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def image(self, z: torch.Tensor, c: int | None = None) -> bytes:
        """One PNG for one pre-truncated latent [z_dim] (and class c, conditional models)."""
        if not self.enabled:
            self._note(1)
            return (await self.runner.run(self.runner.images_png, z[None], _classes([c])))[0]
        self._ensure_worker()
        assert self._queue is not None
        job = _Job(z, asyncio.get_running_loop().create_future(), c=c)
        await self._queue.put(job)
        return await job.future

    def _ensure_worker(self) -> None:
        # Created lazily, so the queue and the task belong to the loop that serves requests
        # (a test client may bring a new loop; a task left on an old one would never run).
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._work())
            self._loop = loop

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        last = 1  # size of the previous batch
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < self.max_batch:
                batch.append(queue.get_nowait())
            # A lone request after a lone request (one user dragging a slider) is run at once;
            # with company, wait out the window for the clients about to send again.
            if len(batch) > 1 or last > 1:
                await self._collect(queue, batch)
            last = len(batch)
            live = [j for j in batch if not j.future.done()]  # a client may have gone away
            if not live:
                continue
            self._note(len(live))
            try:
                pngs = await self.runner.run(self.runner.images_png,
                                             torch.stack([j.z for j in live]),
                                             _classes([j.c for j in live]))
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, png in zip(live, pngs, strict=True):
                if not j.future.done():
                    j.future.set_result(png)

    async def _collect(self, queue: asyncio.Queue[_Job], batch: list[_Job]) -> None:
        """Add requests arriving until `window_s` after the oldest one, up to `max_batch`."""
        deadline = batch[0].arrived + self.window_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            wait = deadline - time.perf_counter()
            if wait <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(queue.get(), wait))
            except TimeoutError:
                return

    def _note(self, n: int) -> None:
        self.batches += 1
        self.images += n
        self.largest = max(self.largest, n)

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "images": self.images,
                "mean_batch": self.images / max(self.batches, 1), "max_batch_seen": self.largest}

    async def close(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _classes(cs: list[int | None]) -> torch.Tensor | None:
    """Class indices for a batch: None for an unconditional model (no class anywhere), class 0
    where a conditional request named none."""
    if all(c is None for c in cs):
        return None
    return torch.tensor([c or 0 for c in cs], dtype=torch.long)
