"""amp=auto on a CPU: time the model's own training step in float32 and in bfloat16 autocast,
and keep bfloat16 only where it is measurably faster.

A CPU's flags do not answer this. Both machines this project was measured on have AVX-512
BF16 and no AMX, and bfloat16 autocast ran the `fast` preset's step at 1.21x the speed of
float32 on one (AMD EPYC) and 0.72x on the other (Intel Xeon): docs/BENCHMARKS.md, "amp=auto
on a CPU is measured". So where the flags allow bfloat16 (ganforge.devices.native_bf16), the trainer
measures a few steps of copies of its networks each way before each session trains
(`choose`) and says what it picked; a resume measures again, as it may run on another
machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# bfloat16 must be at least this much faster than float32 to be worth its coarser numbers
MIN_SPEEDUP = 1.05
# time per warm-up step above which one timed step per precision is enough (a 256 px step
# on a laptop CPU takes seconds; the decision is rarely close there)
SLOW_STEP_S = 1.0


@dataclass(frozen=True)
class AmpChoice:
    amp: str  # "bf16" or "off"
    speedup: float  # float32's median step time / bfloat16's (> 1: bfloat16 is faster)
    steps: int  # timed steps per precision

    def describe(self) -> str:
        verdict = ("training in bfloat16" if self.amp == "bf16"
                   else f"training in float32 (bf16 needs {MIN_SPEEDUP:.2f}x)")
        timed = "one step each" if self.steps == 1 else f"median of {self.steps} steps each"
        return (f"amp=auto: bfloat16 autocast runs this model's training step at "
                f"{self.speedup:.2f}x the speed of float32 on this CPU ({timed}): {verdict}")


def decide(fp32_s: list[float], bf16_s: list[float]) -> AmpChoice:
    """The choice from timed steps of each precision (seconds per step)."""
    speedup = statistics.median(fp32_s) / max(statistics.median(bf16_s), 1e-12)
    return AmpChoice("bf16" if speedup >= MIN_SPEEDUP else "off", speedup, len(fp32_s))


def choose(time_step: Callable[[torch.dtype | None], float], rounds: int = 3) -> AmpChoice:
    """Time `time_step(dtype)` (one training step under autocast to `dtype`, None = float32,
    returning its seconds) after one warm-up step each (the first call of a kernel builds it),
    alternating the precisions so that a change in the machine's load hits both alike."""
    warm = max(time_step(None), time_step(torch.bfloat16))
    if warm > SLOW_STEP_S:
        rounds = 1
    fp32, bf16 = [], []
    for _ in range(rounds):
        fp32.append(time_step(None))
        bf16.append(time_step(torch.bfloat16))
    return decide(fp32, bf16)


def timer(step: Callable[[torch.dtype | None], None]) -> Callable[[torch.dtype | None], float]:
    """`step` (which runs one step under the given autocast dtype) as a function returning
    its wall-clock seconds."""
    def timed(dtype: torch.dtype | None) -> float:
        t0 = time.perf_counter()
        step(dtype)
        return time.perf_counter() - t0
    return timed
