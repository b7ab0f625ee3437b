"""What the explorer reads from a training run directory: metrics, sample grids, liveness.

Grids are addressed by step number only. The server lists `samples/` itself and maps a step
to a file name it built (`step-000120.png`), so nothing a client sends ever becomes a path.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any

from ganforge import io, selection

GRID_NAME = re.compile(r"^step-(\d{6,9})\.png$")
SCORE_NAME = re.compile(r"^(fid|kid)\d+k?(_[a-z0-9]+)?$")  # fid500_train, kid5k_test
RECENT_S = 120.0  # without /proc/locks: a log written this recently means "still training"


def run_dir_of(checkpoint_path: Path) -> Path | None:
    """The run directory holding a checkpoint (<run>/checkpoints/x.safetensors), if it is one."""
    parent = checkpoint_path.resolve().parent
    if parent.name == "checkpoints" and (parent.parent / "config.json").exists():
        return parent.parent
    return None


def _finite(value: Any) -> Any:
    # The log may hold NaN/inf in eval fields; strict JSON (and the page) cannot carry them.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _score_keys(evals: list[dict[str, Any]]) -> list[str]:
    """The FID/KID figures to chart: the protocol-named ones (fid500_train, kid5k_test), or
    the trainer's bare aliases (fid, kid) when nothing else is there."""
    numeric = {k for r in evals for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    named = sorted(k for k in numeric if SCORE_NAME.match(k) and not k.endswith("_std"))
    return named or sorted(k for k in numeric if k in ("fid", "kid"))


def metrics(run_dir: Path) -> dict[str, Any]:
    """The run's train, eval and health records, the best checkpoint's step and whether the
    run is still being trained."""
    groups: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "health": []}
    for r in io.read_jsonl(run_dir / "metrics.jsonl"):
        if not isinstance(r, dict) or not isinstance(r.get("step"), int):
            continue
        kind = r.get("kind", "train")
        if kind in groups:
            groups[kind].append({k: _finite(v) for k, v in r.items()
                                 if isinstance(v, (int, float, str, bool)) or v is None})
    evals = groups["eval"]
    score_keys = _score_keys(evals)
    best = None
    best_key = next((k for k in score_keys if k.startswith("fid")), None)
    r = selection.best_eval(evals, best_key)
    if r is not None:  # reported under the chosen record's own named key
        metric = next((k for k in score_keys if k.startswith("fid")
                       and isinstance(r.get(k), (int, float))), "fid")
        best = {"step": r["step"], "metric": metric, "value": r[metric]}
    return {"available": True, "train": groups["train"], "eval": evals,
            "events": groups["health"], "score_keys": score_keys, "best": best,
            "training": is_training(run_dir)}


def _grid_files(run_dir: Path) -> dict[int, str]:
    try:
        names = os.listdir(run_dir / "samples")
    except OSError:
        return {}
    return {int(m.group(1)): n for n in names if (m := GRID_NAME.match(n))}


def grid_steps(run_dir: Path) -> list[int]:
    return sorted(_grid_files(run_dir))


def grid_png(run_dir: Path, step: int) -> bytes | None:
    """The grid written at `step`: a file of the server's own listing of samples/, or None."""
    name = _grid_files(run_dir).get(step)
    if name is None:
        return None
    try:
        return (run_dir / "samples" / name).read_bytes()
    except OSError:
        return None  # removed since the listing


def is_training(run_dir: Path) -> bool:
    """True while a `ganforge train` process holds the run's lock (it uses flock)."""
    lock = run_dir / "train.lock"
    try:
        st = lock.stat()
    except OSError:
        return False
    try:
        with open("/proc/locks", encoding="ascii") as f:
            table = f.read()
    except OSError:
        log = run_dir / "metrics.jsonl"
        return log.exists() and time.time() - log.stat().st_mtime < RECENT_S
    # Lines look like "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (maj:min:inode, hex
    # device numbers).
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[1] == "FLOCK" and dev in line.split()
               for line in table.splitlines() if len(line.split()) > 5)
