"""kill -9 at many moments, resume, repeat: nothing is lost, and the result is bit-identical
to a run that was never interrupted.

The training process is the real CLI, started through tests/kill_at.py, which has it send
itself SIGKILL at a moment counted in events rather than timed, so every kill lands where it
was aimed whatever the speed (or load) of the machine: half-way through writing a checkpoint,
after writing it but before renaming it over the old one, after the rename but before the
directory sync, half-way through a log line, a sample grid or a plot, or between two training
steps. Which moment, and the how-many-th of its kind, is drawn from a seeded generator.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch

from ganforge import checkpoint

TARGET = 32
FIXED = ["--set", "g_width=8", "--set", "d_width=8", "--set", "batch_size=16",
         "--set", "sample_every=4", "--set", "log_every=1", "--set", "threads=1"]
KILL_AT = Path(__file__).with_name("kill_at.py")
# One kill per cycle, each moment once (in a seeded order), then the last resume runs through.
MOMENTS = ["checkpoints-partial", "checkpoints-unrenamed", "checkpoints-renamed", "log",
           "samples-partial", "plots-partial", "step"]
PLOTS_PER_INTERVAL = 5  # losses, accuracy, scores, grad_norms, speed


def _start(run: Path, data: Path, kill: tuple[str, int] | None = None) -> subprocess.Popen:
    """`train --resume` once the run has a checkpoint, else a fresh `train` (a kill before the
    step-0 checkpoint leaves nothing to resume); with `kill`, through tests/kill_at.py."""
    cmd = [sys.executable, *([str(KILL_AT), kill[0], str(kill[1])] if kill else
                             ["-m", "ganforge", "train"])]
    cmd += ["--out", str(run), "--no-progress"]
    if (run / "checkpoints" / "latest.safetensors").exists():
        cmd.append("--resume")
    else:
        cmd += ["--data", str(data), "--variant", "dcgan", "--steps", str(TARGET), *FIXED]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _temp_files(run: Path) -> list[Path]:
    return list(run.rglob("*.tmp"))


def _events_left(run: Path, moment: str) -> int:
    """How many events of this kind the next process will go through (so the Nth is reached)."""
    latest = run / "checkpoints" / "latest.safetensors"
    fresh = not latest.exists()
    step = 0 if fresh else checkpoint.load_checkpoint(latest).step
    intervals = (TARGET - step) // 4
    return {"checkpoints": intervals + fresh, "samples": intervals,
            "plots": PLOTS_PER_INTERVAL * intervals, "log": TARGET - step,
            "step": TARGET - step}[moment.split("-")[0]]


def test_kill_9_at_random_moments_loses_nothing(fmnist_dir, tmp_path):
    straight_dir = tmp_path / "straight"
    # The uninterrupted reference runs alongside the kill cycles (one thread each).
    straight = _start(straight_dir, fmnist_dir)
    run = tmp_path / "run"
    rng = random.Random(20240605)
    moments = rng.sample(MOMENTS, len(MOMENTS))
    kills, in_write = 0, 0
    for moment in moments:
        before = set(_temp_files(run))
        nth = rng.randint(1, min(2 if moment.startswith("checkpoints") else 4,
                                 _events_left(run, moment)))
        p = _start(run, fmnist_dir, (moment, nth))
        _out, err = p.communicate(timeout=300)
        assert p.returncode == -signal.SIGKILL, (moment, nth, err[-2000:])
        kills += 1
        # the kill fell inside a checkpoint write when it left a temp file there
        in_write += any(t.parent.name == "checkpoints" for t in set(_temp_files(run)) - before)
    # the lock of a killed process is gone: the last resume is not refused
    last = _start(run, fmnist_dir)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert f"trained to step {TARGET}" in out and "in use" not in err
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err

    assert kills == len(MOMENTS) and in_write == 2, (kills, in_write)
    final = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")  # verifies
    assert final.step == TARGET
    assert _temp_files(run) == []
    raw = (run / "metrics.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]  # no torn line anywhere
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, TARGET + 1))  # one line per step: none lost, none twice
    assert [r for r in records if r["kind"] != "train"] == []

    # bit-identical to the run that was never interrupted: weights, optimiser state, RNGs
    ref = checkpoint.load_checkpoint(straight_dir / "checkpoints" / "latest.safetensors")
    assert final.tensors.keys() == ref.tensors.keys()
    for k in ref.tensors:
        assert torch.equal(final.tensors[k], ref.tensors[k]), f"{k} differs after {kills} kills"
    assert final.meta["state"]["sched"] == ref.meta["state"]["sched"]
    for a in sorted((straight_dir / "samples").iterdir()):
        assert (run / "samples" / a.name).read_bytes() == a.read_bytes(), a.name
    ref_losses = [json.loads(x)["loss_G"] for x in
                  (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss_G"] for r in records] == ref_losses
    print(f"{kills} kills ({in_write} inside a checkpoint write): {', '.join(moments)}")
