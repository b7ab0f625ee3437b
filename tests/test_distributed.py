"""Data-parallel training with torchrun on CPU (gloo): in sync, exact, resumable."""

import os
import subprocess
import sys

import pytest
import torch

from ganforge import checkpoint

COMMON = ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16",
          "--set", "batch_size=16", "--set", "log_every=2", "--set", "sample_every=2",
          "--set", "grid_size=8", "--no-progress"]


def launch(nproc, data_dir, out, *args):
    """`torchrun --nproc_per_node N -m ganforge train ...` (or plain python for N = 1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd += ["-m", "ganforge", "train", "--data", str(data_dir), "--out", str(out), *COMMON,
            *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-12000:]
    return r


def state(run):
    return checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")


def test_two_processes_match_one_at_the_same_global_batch(fmnist_dir, tmp_path):
    args = ["--variant", "mlp", "--steps", "6", "--set", "dropout=0"]
    launch(2, fmnist_dir, tmp_path / "ddp", *args)
    launch(1, fmnist_dir, tmp_path / "one", *args)
    a, b = state(tmp_path / "ddp"), state(tmp_path / "one")
    assert a.meta["state"]["world"] == 2 and b.meta["state"]["world"] == 1
    for k, t in a.module_state("G").items():
        # same images, same latents, averaged gradients: equal up to float summation order
        torch.testing.assert_close(t, b.module_state("G")[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["dcgan", "wgan-gp"])
def test_ranks_stay_identical_and_resume_under_ddp(fmnist_dir, tmp_path, variant):
    launch(2, fmnist_dir, tmp_path / "straight", "--variant", variant, "--steps", "4")
    launch(2, fmnist_dir, tmp_path / "split", "--variant", variant, "--steps", "2")
    r = launch(2, fmnist_dir, tmp_path / "split", "--resume", "--steps", "4")
    assert r.stdout.count("trained to step 4") == 1  # only rank 0 reports
    a, b = state(tmp_path / "straight"), state(tmp_path / "split")
    for ck in (a, b):
        digests = ck.meta["state"]["rank_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]
    assert a.step == b.step == 4
    for prefix in ("G", "D"):
        for k, t in a.module_state(prefix).items():
            assert torch.equal(t, b.module_state(prefix)[k]), f"{prefix}.{k} differs"


def test_batch_must_divide_across_processes(fmnist_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "ganforge", "train", "--data",
                        str(fmnist_dir), "--out", str(tmp_path / "r"), "--variant", "mlp",
                        "--steps", "2", "--set", "batch_size=15", "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "batch_size 15 (the global batch) must be divisible by the 2 processes" in r.stderr
