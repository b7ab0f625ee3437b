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

# relative: twice the measured draw-to-draw spread of one checkpoint's quick FID (see above)
TOLERANCE = 0.03


def replaces_best(fid: float, lowest: float | None) -> bool:
    """Does a checkpoint with quick FID `fid` become the best, given the lowest quick FID of
    the checkpoints before it (None: there were none)?"""
    if not math.isfinite(fid):
        return False
    return lowest is None or not math.isfinite(lowest) or fid <= lowest * (1 + TOLERANCE)


def best_step(scores: Iterable[tuple[int, float]]) -> int | None:
    """The best checkpoint's step among (step, quick FID) pairs in the order they were scored;
    None when none has a finite FID."""
    lowest: float | None = None
    best = None
    for step, fid in scores:
        if replaces_best(fid, lowest):
            best = step
        if math.isfinite(fid):
            lowest = fid if lowest is None else min(lowest, fid)
    return best
