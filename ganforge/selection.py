"""Which checkpoint of a run is its best: the one `sample`, `evaluate`, `serve` and the plots
use unless told `--latest`.

A run ranks its checkpoints by the quick FID it logs (eval_n generated images, 250 by default,
against the training data). At that size one checkpoint's figure moves by about 1.5 % from one
latent draw to another (measured on Fashion-MNIST at a quick FID of 74: docs/BENCHMARKS.md,
"Choosing the best checkpoint"), so two checkpoints closer than about twice that cannot be
ranked by it; the later one has trained longer and its EMA has averaged more (in the measured
pair, 5,000 images scored it better). The best checkpoint is therefore the latest one whose
quick FID is within TOLERANCE of the lowest seen up to it; a later checkpoint that is clearly
worse (a run that diverged or collapsed) still leaves the best where it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# relative: twice the measured draw-to-draw spread of one checkpoint's quick FID (see above)
TOLERANCE = 0.03


def replaces_best(fid: float, lowest: float | None) -> bool:
    """Does a checkpoint with quick FID `fid` become the best, given the lowest quick FID of
    the checkpoints before it (None: there were none)?"""
    if not math.isfinite(fid):
        return False
    return lowest is None or not math.isfinite(lowest) or fid <= lowest * (1 + TOLERANCE)


def lowest_after(fid: float, lowest: float | None) -> float | None:
    """The lowest quick FID so far once a checkpoint scored `fid` (non-finite figures skipped,
    a non-finite `lowest` from an older checkpoint counted as none)."""
    if not math.isfinite(fid):
        return lowest
    return fid if lowest is None or not math.isfinite(lowest) else min(lowest, fid)


def best_step(scores: Iterable[tuple[int, float]]) -> int | None:
    """The best checkpoint's step among (step, quick FID) pairs in the order they were scored;
    None when none has a finite FID."""
    lowest: float | None = None
    best = None
    for step, fid in scores:
        if replaces_best(fid, lowest):
            best = step
        lowest = lowest_after(fid, lowest)
    return best


def is_finite_number(v: Any) -> bool:
    """A real, finite number (not a bool): a figure a record can be ranked or plotted by."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def best_eval(evals: list[dict[str, Any]], named: str | None) -> dict[str, Any] | None:
    """The eval record (metrics.jsonl) of the best checkpoint, ranked as the trainer ranked
    them: by its `fid` alias where logged (a resume may change eval_n and with it the named
    key), else by `named` (a protocol-named FID such as fid5k_test)."""
    key = "fid" if any(is_finite_number(r.get("fid")) for r in evals) else named
    scored = [r for r in evals if key and is_finite_number(r.get(key))]
    step = best_step((r["step"], r[key]) for r in scored)
    return None if step is None else next(r for r in reversed(scored) if r["step"] == step)
