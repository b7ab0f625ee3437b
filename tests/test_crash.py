"""kill -9 at random moments, resume, repeat: nothing is lost, and the result is bit-identical
to a run that was never interrupted.

The training process is the real CLI (`python -m ganforge train`). Half of the kills are aimed
at a checkpoint write: the test watches `checkpoints/` and sends SIGKILL the moment a temp file
appears there, so the process dies after writing some or all of the new checkpoint but before
(or while) renaming it over the old one. The others land a random (seeded) time after the run
has made progress: in a training step, a log append, a sample grid or a plot.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ganforge import checkpoint

TARGET = 32
FIXED = ["--set", "g_width=8", "--set", "d_width=8", "--set", "batch_size=16",
         "--set", "sample_every=4", "--set", "log_every=1", "--set", "threads=1"]
CYCLES = 6  # kill-and-resume cycles before the last, uninterrupted resume


def _start(run: Path, data: Path) -> subprocess.Popen:
    """`train --resume` once the run has a checkpoint, else a fresh `train` (a kill before the
    step-0 checkpoint leaves nothing to resume)."""
    cmd = [sys.executable, "-m", "ganforge", "train", "--out", str(run), "--no-progress"]
    if (run / "checkpoints" / "latest.safetensors").exists():
        cmd.append("--resume")
    else:
        cmd += ["--data", str(data), "--variant", "dcgan", "--steps", str(TARGET), *FIXED]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _temp_files(run: Path) -> list[Path]:
    return list(run.rglob("*.tmp"))


def _log_stamp(run: Path) -> tuple[int, int]:
    try:
        st = (run / "metrics.jsonl").stat()
    except FileNotFoundError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


def _kill_in_checkpoint_write(p: subprocess.Popen, run: Path, nth: int, delay: float) -> bool:
    """SIGKILL `delay` s after the nth checkpoint write of this process begins."""
    ckpt_dir, seen, stale = run / "checkpoints", 0, set()
    if ckpt_dir.exists():  # a killed predecessor's leftover is not this process writing
        stale = {n for n in os.listdir(ckpt_dir) if n.endswith(".tmp")}
    while p.poll() is None:
        names = set(os.listdir(ckpt_dir)) if ckpt_dir.exists() else set()
        if any(n.endswith(".tmp") for n in names - stale):
            seen += 1
            if seen == nth:
                time.sleep(delay)
                p.send_signal(signal.SIGKILL)
                return True
            while p.poll() is None and any(
                    n.endswith(".tmp") for n in set(os.listdir(ckpt_dir)) - stale):
                time.sleep(0.0005)
        time.sleep(0.0005)
    return False


def _kill_after_progress(p: subprocess.Popen, run: Path, delay: float) -> bool:
    """SIGKILL `delay` s after the process has first written to the training log."""
    start = _log_stamp(run)
    while p.poll() is None and _log_stamp(run) == start:
        time.sleep(0.005)
    time.sleep(delay)
    if p.poll() is not None:
        return False
    p.send_signal(signal.SIGKILL)
    return True


def test_kill_9_at_random_moments_loses_nothing(fmnist_dir, tmp_path):
    t0 = time.monotonic()
    straight_dir = tmp_path / "straight"
    # The uninterrupted reference runs alongside the kill cycles (one thread each).
    straight = _start(straight_dir, fmnist_dir)
    run = tmp_path / "run"
    rng = random.Random(20240605)
    kills, in_write, errors = 0, 0, []
    for cycle in range(CYCLES):
        before = set(_temp_files(run))
        p = _start(run, fmnist_dir)
        if cycle % 2 == 0:  # the first time: the step-0 checkpoint or the next one
            killed = _kill_in_checkpoint_write(p, run, nth=rng.randint(1, 2) if cycle == 0
                                               else 1, delay=rng.uniform(0, 0.003))
        else:
            killed = _kill_after_progress(p, run, delay=rng.uniform(0.0, 0.4))
        _out, err = p.communicate()
        if not killed:
            errors.append(err)
            break
        assert p.returncode == -signal.SIGKILL
        kills += 1
        # the kill fell inside a checkpoint write when it left a temp file there
        in_write += any(t.parent.name == "checkpoints" for t in set(_temp_files(run)) - before)
    assert not errors, errors  # every process lived until its kill
    # the lock of a killed process is gone: the last resume is not refused
    last = _start(run, fmnist_dir)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert f"trained to step {TARGET}" in out and "in use" not in err
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err

    assert kills >= 5 and in_write >= 2, (kills, in_write)
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
    print(f"{kills} kills ({in_write} inside a checkpoint write), "
          f"{time.monotonic() - t0:.1f} s")
