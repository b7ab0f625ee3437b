"""Data-parallel training with torchrun on CPU (gloo): in sync, exact, resumable, for every
kind of variant; the training-time FID is computed from all processes' images."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge import checkpoint, data, data_cond

pytestmark = pytest.mark.torchrun  # `make test` runs these after the parallel part, alone

FROZEN_NORM = Path(__file__).with_name("frozen_norm_train.py")
TEARDOWN = Path(__file__).with_name("teardown_worker.py")
COMMON = ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16",
          "--set", "batch_size=16", "--set", "log_every=2", "--set", "sample_every=2",
          "--set", "grid_size=8", "--no-progress",
          "--device", "cpu"]  # gloo on CPUs, also on a machine with a GPU (one GPU: no NCCL pair)


def launch(nproc, data_dir, out, *args, entry=("-m", "ganforge", "train")):
    """`torchrun --nproc_per_node N -m ganforge train ...` (or plain python for N = 1); `entry`:
    another program and its leading arguments in place of `-m ganforge train`, such as
    tests/frozen_norm_train.py (samples independent within a batch)."""
    # PYTHONFAULTHANDLER: a process killed by a signal prints every thread's Python stack into
    # the stderr the failure message shows (as it did for the gloo abort at exit, 2026-12)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd += list(entry)
    cmd += ["--data", str(data_dir), "--out", str(out), *COMMON, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-12000:]
    return r


def state(run):
    return checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")


def evals(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


def test_two_processes_match_one_at_the_same_global_batch(fmnist_dir, tmp_path):
    args = ["--variant", "mlp", "--steps", "6", "--set", "dropout=0", "--set", "eval_n=12",
            "--set", "eval_every=6"]
    launch(2, fmnist_dir, tmp_path / "ddp", *args)
    launch(1, fmnist_dir, tmp_path / "one", *args)
    a, b = state(tmp_path / "ddp"), state(tmp_path / "one")
    assert a.meta["state"]["world"] == 2 and b.meta["state"]["world"] == 1
    for k, t in a.module_state("G").items():
        # same images, same latents, averaged gradients: equal up to float summation order
        torch.testing.assert_close(t, b.module_state("G")[k], rtol=1e-4, atol=1e-6)
    # The quick FID: each process generated and scored 6 of the 12 images, rank 0 gathered
    # the features. They are the images one process makes from the same latents, with weights
    # equal to ~1e-6: G's weights perturbed by 1e-5 to 1e-4 relative change 3-17 pixels by one
    # grey level and FID (~470 here) and KID by < 1e-4 relative, while scoring other images
    # (both processes the same slice) moves FID by 0.5 %. Hence 5e-4 (equal bits in practice).
    (ev2,), (ev1,) = evals(tmp_path / "ddp"), evals(tmp_path / "one")
    assert ev2["step"] == ev1["step"] == 6 and ev2["n_fake"] == ev1["n_fake"] == 12
    assert ev2["fid12_train"] == pytest.approx(ev1["fid12_train"], rel=5e-4)
    assert ev2["kid12_train"] == pytest.approx(ev1["kid12_train"], rel=5e-4)
    assert a.meta["state"]["best_fid"] == ev2["fid"]


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
                        "--steps", "2", "--set", "batch_size=15", "--no-progress",
                        "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "batch_size 15 (the global batch) must be divisible by the 2 processes" in r.stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_process_group_is_gone_before_the_interpreter_exits(fmnist_dir, tmp_path):
    """A finished run leaves no gloo thread behind: the group is freed by the CLI itself, not
    left to the interpreter's shutdown, the likely cause of a finished process's SIGABRT seen
    twice in CI in 2026-12 (ganforge.distributed._bind_world_defaults_first)."""
    launch(2, fmnist_dir, tmp_path / "run", "--variant", "dcgan", "--steps", "2",
           entry=[str(TEARDOWN), str(tmp_path), "train"])
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"threads_rank{rank}.json").read_text())
        # while the group lives its threads are visible by name (the check below can fail)
        assert any("gloo" in name for name in seen["with_group"]), seen
        assert not any("gloo" in name for name in seen["after"]), seen


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    """Small real data for the other kinds of variant: 32 pairs (edge map -> Fashion-MNIST
    test item) for pix2pix, and 32 test items as CycleGAN's domain A (the 300 training items
    are its domain B)."""
    root = tmp_path_factory.mktemp("ddp-data")
    data_cond.prepare_paired("fashion-mnist-edges:test", root / "edges", limit=32,
                             progress=False)
    data.prepare("fashion-mnist:test", root / "a", limit=32, progress=False)
    return root


def digests_agree(run):
    ck = state(run)
    digests = ck.meta["state"]["rank_digests"]
    assert ck.meta["state"]["world"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    return ck


def train_log(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.parametrize("variant", ["cgan", "pix2pix", "cyclegan"])
def test_two_processes_train_as_one_for_labels_pairs_and_two_domains(
        variant, fmnist_dir, small_sets, tmp_path):
    """1 process vs 2 (gloo, --device cpu) at the same global batch: the same logged losses
    and weights, so each process took its own slice of the same images *and* of their
    labels (cgan), of their pairs (pix2pix) and of both domains (cyclegan). Batch norms use
    running statistics and dropout is off here (tests/frozen_norm_train.py): in real runs they
    depend on the per-process batch by design."""
    source, args = {
        # labelled Fashion-MNIST (the fixture keeps the labels). The mode-seeking term is a
        # ratio of batch means, per process like BatchNorm's statistics: off here
        "cgan": (fmnist_dir, ["--set", "mode_seeking=0"]),
        "pix2pix": (small_sets / "edges", ["--set", "g_width=4", "--set", "d_width=4"]),
        "cyclegan": (small_sets / "a", ["--data-b", str(fmnist_dir), "--size", "28",
                                        "--set", "g_width=4", "--set", "d_width=4",
                                        "--set", "res_blocks=1", "--set", "pool_size=0",
                                        "--set", "lr_decay=0"]),
    }[variant]
    args = ["--variant", variant, "--steps", "4", "--device", "cpu", "--set", "eval_n=0",
            "--set", "log_every=1", "--set", "sample_every=4", *args]
    launch(2, source, tmp_path / "two", *args, entry=[str(FROZEN_NORM)])
    launch(1, source, tmp_path / "one", *args, entry=[str(FROZEN_NORM)])
    two, one = digests_agree(tmp_path / "two"), state(tmp_path / "one")
    assert two.meta["state"]["world"] == 2 and one.meta["state"]["world"] == 1
    log2, log1 = train_log(tmp_path / "two"), train_log(tmp_path / "one")
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == [1, 2, 3, 4]
    for r2, r1 in zip(log2, log1, strict=True):
        for key in ("loss_D", "loss_G", "l1", "cycle"):
            if key in r1:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), (r1["step"], key)
    if variant == "cyclegan":
        # its convolutions' biases before an InstanceNorm have no effect: their gradient is 0
        # up to rounding, which Adam turns into steps of ±lr; so compare what G computes
        from ganforge.sample import load_generator

        images = {"a2b": data.load_dataset(small_sets / "a").images[:8],
                  "b2a": data.load_dataset(fmnist_dir).images[:8]}
        g2, g1 = (load_generator(tmp_path / r, prefer="latest") for r in ("two", "one"))
        for direction, x in images.items():
            out2, out1 = (g.translate(np.asarray(x), direction).astype(int) for g in (g2, g1))
            assert np.abs(out2 - out1).max() <= 1, direction
        return
    for prefix in ("G", "D"):
        for k, t in one.module_state(prefix).items():
            torch.testing.assert_close(two.module_state(prefix)[k], t, rtol=1e-4, atol=1e-6)


def test_cyclegan_pools_per_process_and_resume_under_ddp(fmnist_dir, small_sets, tmp_path):
    args = ["--variant", "cyclegan", "--data-b", str(fmnist_dir), "--size", "28",
            "--set", "g_width=4", "--set", "d_width=4", "--set", "res_blocks=1",
            "--set", "batch_size=4", "--set", "pool_size=3", "--set", "lr_decay=0"]
    launch(2, small_sets / "a", tmp_path / "straight", *args, "--steps", "4",
           "--set", "sample_every=4")  # fewer snapshots; they do not change the training
    launch(2, small_sets / "a", tmp_path / "split", *args, "--steps", "2")
    launch(2, small_sets / "a", tmp_path / "split", *args, "--resume", "--steps", "4")
    a, b = digests_agree(tmp_path / "straight"), digests_agree(tmp_path / "split")
    # each process's pool holds the fakes of its own slice of the batch
    assert not torch.equal(a.tensors["pool.images_a"], a.tensors["pool_rank1.images_a"])
    # every process resumed its own pool and RNG streams: bit-identical to the straight run
    assert a.step == b.step == 4
    for prefix in ("G", "D", "pool", "pool_rank1"):
        for k, t in a.module_state(prefix).items():
            assert torch.equal(t, b.module_state(prefix)[k]), f"{prefix}.{k} differs"
