"""The GPU code paths, checked on the CPU wherever a CPU can show them: exact resume with
channels_last and fp16 loss scaling, the fp16 step logic across processes, device-independent
run state, true float32 Inception, device selection, torchrun binding, and the per-step host
synchronisations that the GPU loop must not have. tests/test_gpu.py runs the same paths on
CUDA (marked `gpu`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_health import nan_once, records
from torch.utils._python_dispatch import TorchDispatchMode

from ganforge import checkpoint, losses
from ganforge import distributed as dist_
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.train import TrainingStopped, train

TINY = {"variant": "dcgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
        "log_every": 3, "sample_every": 6, "grid_size": 16, "eval_n": 0, "tensorboard": False}


def cfg_for(data_dir, **kw):
    return build_config([{"data": str(data_dir), **TINY, **kw}])


def final(run):
    return checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")


def assert_same_weights(a, b, prefixes=("G", "D")):
    for prefix in prefixes:
        sa, sb = a.module_state(prefix), b.module_state(prefix)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{prefix}.{k} differs"


# -- defect 1: channels_last resume and rollback ---------------------------------------------


def test_channels_last_resume_and_rollback_are_bit_identical(fmnist_dir, tmp_path):
    """Adam's moments must keep their parameters' channels-last layout through a checkpoint:
    a straight run, a run split at step 6 and resumed, and a run that rolls back to step 6
    (learning rate unchanged: rollback_lr_factor 1) end with the same bits. With the `fast`
    preset's EMA of G and 3x3 D convolutions, since that preset trains channels-last."""
    kw = {"channels_last": True, "rollback_lr_factor": 1.0, "ema": 0.999, "d_convs": 1}
    train(cfg_for(fmnist_dir, steps=12, **kw), tmp_path / "straight", progress=False)
    train(cfg_for(fmnist_dir, steps=6, **kw), tmp_path / "split", progress=False)
    train(None, tmp_path / "split", resume=True, overrides={"steps": 12}, progress=False)
    train(cfg_for(fmnist_dir, steps=12, **kw), tmp_path / "rollback", progress=False,
          fault_hook=nan_once(7))
    (event,) = records(tmp_path / "rollback", "health")
    assert event["action"].startswith("rolled back to step 6")
    straight = final(tmp_path / "straight")
    assert_same_weights(straight, final(tmp_path / "split"))
    assert_same_weights(straight, final(tmp_path / "rollback"))


# -- defect 2: fp16 loss scaling --------------------------------------------------------------


def overflow_d_once(at_step):
    """After G step `at_step`, the next D backward yields an inf gradient (an fp16 overflow)."""
    fired = []

    def hook(trainer):
        if trainer.step == at_step and not fired:
            fired.append(True)
            p = next(trainer.D.parameters())
            handle = None

            def to_inf(grad):
                handle.remove()
                return torch.full_like(grad, float("inf"))

            handle = p.register_hook(to_inf)
    return hook


def test_fp16_skips_are_not_divergence_and_resume_restores_the_scaler(fmnist_dir, tmp_path):
    """amp=fp16 (run on the CPU here, the GPU's code path): a step GradScaler skips for an
    overflow is logged as such, not answered as divergence (on_problem=stop would raise), and
    the scaler's state travels in the checkpoint, so a split run resumes bit-exactly."""
    kw = {"amp": "fp16", "on_problem": "stop", "steps": 12}
    train(cfg_for(fmnist_dir, **kw), tmp_path / "straight", progress=False,
          fault_hook=overflow_d_once(4))
    assert not records(tmp_path / "straight", "health")
    # steps 1-3: GradScaler's usual first overflows (2 here); steps 4-6: the injected one
    log = records(tmp_path / "straight", "train")
    assert log[1]["amp_skips_D"] == pytest.approx(1 / 3) and np.isfinite(log[1]["grad_norm_D"])
    assert log[2]["amp_skips_D"] == 0 and log[2]["amp_scale"] < log[0]["amp_scale"]
    straight = final(tmp_path / "straight")
    scaler = straight.meta["state"]["scaler"]
    assert scaler["scale"] == log[-1]["amp_scale"] < 2.0 ** 16
    train(cfg_for(fmnist_dir, **{**kw, "steps": 6}), tmp_path / "split", progress=False,
          fault_hook=overflow_d_once(4))
    train(None, tmp_path / "split", resume=True, overrides={"steps": 12}, progress=False)
    split = final(tmp_path / "split")
    assert split.meta["state"]["scaler"] == scaler
    assert_same_weights(straight, split)


def test_every_fp16_step_overflowing_is_non_finite(fmnist_dir, tmp_path):
    def overflow_always(trainer):
        p = next(trainer.D.parameters())
        if not getattr(p, "_poisoned", False):
            p._poisoned = True
            p.register_hook(lambda g: torch.full_like(g, float("nan")))

    # each skip halves the scale from 2^16: below 1 after 17 D steps
    with pytest.raises(TrainingStopped, match="every fp16 step.*loss scale down to"):
        train(cfg_for(fmnist_dir, amp="fp16", on_problem="stop", steps=30), tmp_path / "run",
              progress=False, fault_hook=overflow_always)


@pytest.mark.parametrize("d_norm", ["instance", "layer"])
def test_fp16_gradient_penalty_overflow_is_skipped_not_divergence(fmnist_dir, tmp_path, d_norm):
    """wgan-gp with amp=fp16: at GradScaler's starting scale the penalty's scaled inner
    gradient overflows, so the first steps' penalty and loss are inf/NaN. The scaler skips
    those steps and lowers the scale (a normal fp16 overflow): the health monitor must not
    answer them as divergence, the log holds finite averages, and once the scale is down D
    steps are taken (the InstanceNorm critic's double backward, in float16, overflowed at any
    scale: every step was skipped)."""
    train(cfg_for(fmnist_dir, variant="wgan-gp", d_norm=d_norm, amp="fp16", n_critic=2,
                  on_problem="stop", steps=6), tmp_path / "run", progress=False)
    log = records(tmp_path / "run", "train")
    assert log[0]["amp_skips_D"] > 0 and log[-1]["amp_skips_D"] == 0
    assert all(np.isfinite(r["loss_D"]) and np.isfinite(r["gp"]) for r in log)


def test_gradient_penalty_inner_grad_is_loss_scaled():
    """Under a loss scale, the penalty's inner backward carries scale/N into D (the range
    GradScaler keeps fp16 gradients in) and the scale is divided out again: same penalty."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake, eps = torch.randn(4, 12), torch.randn(4, 12), torch.rand(4, 1)
    seen = []

    def spy(x):
        out = D(x)
        out.register_hook(lambda g: seen.append(g.abs().max().item()))
        return out

    plain = losses.gradient_penalty(spy, real, fake, eps)
    with losses.loss_scale(torch.tensor(2.0 ** 12)):
        scaled = losses.gradient_penalty(spy, real, fake, eps)
    assert seen == [1.0, 2.0 ** 12 / 4]
    torch.testing.assert_close(scaled, plain, rtol=1e-6, atol=0)


@pytest.mark.torchrun
def test_ranks_average_before_the_fp16_inf_check_and_buckets_match_flat(tmp_path):
    """Two gloo processes (tests/ddp_grad_worker.py): gradients all-reduced in buckets while
    backward runs equal one flat all-reduce after it (gradient penalty included), and an fp16
    overflow on one rank makes both skip the step and stay identical."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(Path(__file__).with_name("ddp_grad_worker.py")),
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-6000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["n_buckets"] > 2
    for res in (r0, r1):
        assert res["grads_buckets"] == res["grads_flat"]
        assert res["skip1"] == 1.0 and res["unchanged_after_skip"]
        assert res["skip2"] == 0.0 and res["finite"]
    assert r0["grads_flat"] == r1["grads_flat"]  # averaged: the same on both ranks
    assert r0["scale_after_skip"] == r1["scale_after_skip"] == 8.0
    assert r0["digest"] == r1["digest"]


# -- defect 3: device-independent run state ---------------------------------------------------


def test_run_state_round_trip():
    """RunState: samplers, latent stream, global RNG, loss scaler and per-process modules
    saved and loaded as one object continue exactly where they were."""
    from ganforge.nets.pool import HistoryPool
    from ganforge.runstate import NoiseStream, RunState
    from ganforge.train_utils import BatchSampler

    def make():
        images = torch.arange(7 * 4, dtype=torch.uint8).reshape(7, 1, 2, 2)
        samplers = [BatchSampler(images, seed=1), BatchSampler(images.flip(0), seed=2)]
        scaler = torch.amp.GradScaler("cpu")
        pool = HistoryPool(3, 1, 2)
        rs = RunState(samplers, NoiseStream(5, torch.device("cpu")), scaler,
                      {"G": torch.nn.Linear(1, 1), "pool": pool}, {"G": None},
                      dist_.Dist(), torch.device("cpu"))
        return rs, pool

    rs, pool = make()
    for _ in range(3):
        rs.samplers[0].next(4)
        rs.samplers[1].next(3)
        torch.randn(2, generator=rs.noise.next())
    rs.scaler.load_state_dict({"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                               "growth_interval": 7, "_growth_tracker": 3})
    pool.query("a", torch.randn(2, 1, 2, 2))
    torch.manual_seed(11)
    tensors, plain = rs.state_dict()
    assert tensors["rng.noise"].tolist() == [5, 3]  # (seed, draws): no device generator state
    plain = json.loads(json.dumps(plain))
    tensors = {k: v.clone() for k, v in tensors.items()}

    expect = (rs.samplers[0].next(5)["real"], rs.samplers[1].next(2)["real"],
              torch.randn(3, generator=rs.noise.next()), torch.rand(2),
              pool.query("a", torch.ones(2, 1, 2, 2)))
    rs2, pool2 = make()
    rs2.load_state_dict(tensors, plain)
    got = (rs2.samplers[0].next(5)["real"], rs2.samplers[1].next(2)["real"],
           torch.randn(3, generator=rs2.noise.next()), torch.rand(2),
           pool2.query("a", torch.ones(2, 1, 2, 2)))
    for a, b in zip(expect, got, strict=True):
        assert torch.equal(a, b)
    assert rs2.scaler.state_dict() == rs.scaler.state_dict()
    assert pool2.filled == pool.filled


def test_resume_on_another_device_string_is_exact(fmnist_dir, tmp_path):
    """`--device` may change on resume: the saved state has no device generator in it (the
    latent stream is a counter), so a run resumes on `cpu:0` (on a GPU machine: cuda <-> cpu,
    tests/test_gpu.py) and continues exactly."""
    train(cfg_for(fmnist_dir, steps=8, device="cpu"), tmp_path / "straight", progress=False)
    train(cfg_for(fmnist_dir, steps=4, device="cpu"), tmp_path / "split", progress=False)
    train(None, tmp_path / "split", resume=True, overrides={"steps": 8, "device": "cpu:0"},
          progress=False)
    a, b = final(tmp_path / "straight"), final(tmp_path / "split")
    assert_same_weights(a, b)
    noise = b.tensors["rng.noise"]
    assert noise.dtype == torch.int64 and noise.shape == (2,)
    assert b.config["device"] == "cpu:0"


# -- defect 4: Inception in true float32, cache keyed by device -------------------------------


def test_inception_runs_in_true_float32_and_cache_key_names_the_device(monkeypatch):
    from ganforge.metrics import refstats
    from ganforge.metrics.extract import FeatureExtractor

    ex = FeatureExtractor(progress=False)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cudnn.conv.fp32_precision,
                         torch.backends.cuda.matmul.fp32_precision))
            return torch.zeros(len(x), 2048)

    ex.net = Spy()
    images = np.zeros((3, 8, 8, 1), np.uint8)
    ex.extract(images)
    assert seen == [("ieee", "ieee")]  # cuDNN's default for convolutions is TF32
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # restored after
    FeatureExtractor.__init__(ex, dtype="tf32", progress=False)
    ex.net = Spy()
    ex.extract(images)
    assert seen[-1] == ("tf32", "tf32")
    cpu = refstats.cache_key("h", "test", 10, precision="float32", device="cpu")
    gpu = refstats.cache_key("h", "test", 10, precision="float32", device="cuda:1")
    assert gpu["device"] == "cuda" and refstats.cache_path(cpu) != refstats.cache_path(gpu)


def test_statistics_on_a_device_match_numpy():
    from ganforge.metrics.scores import feature_stats, fid_from_stats, kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(
        np.float32) + 0.3
    (mu_np, s_np), (mu_t, s_t) = feature_stats(a), feature_stats(a, device="cpu")
    np.testing.assert_allclose(mu_t, mu_np, rtol=1e-12)
    np.testing.assert_allclose(s_t, s_np, rtol=1e-10, atol=1e-14)
    stats = (*feature_stats(a), *feature_stats(b))
    assert fid_from_stats(*stats, device="cpu") == pytest.approx(fid_from_stats(*stats),
                                                                 rel=1e-9)
    k_np, k_t = kid(a, b, 10, 20), kid(a, b, 10, 20, device="cpu")
    assert k_t == pytest.approx(k_np, rel=1e-9)


# -- defect 5: bf16 where the chosen device computes it ---------------------------------------


def test_native_bf16_asks_the_chosen_devices_compute_capability(monkeypatch):
    from ganforge.devices import native_bf16

    caps = {0: (8, 0), 1: (7, 0)}  # an A100 and a V100 (bf16 emulated: is_bf16_supported True)
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda i=None: asked.append(i) or caps[i])
    assert native_bf16(torch.device("cuda", 1)) == "off"
    assert native_bf16(torch.device("cuda", 0)) == "bf16"
    assert native_bf16(torch.device("cuda")) == "bf16"
    assert asked == [1, 0, 0]


# -- defect 6: torchrun on a GPU per process, teardown on errors ------------------------------


def test_torchrun_binds_the_gpu_this_process_sees(monkeypatch):
    """SLURM-style binding: each process sees one GPU (number 0) whatever its LOCAL_RANK;
    the process group is told its device (device_id)."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.setdefault("set", dev))
    monkeypatch.setattr(dist_.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist_.dist, "init_process_group",
                        lambda backend, **kw: calls.update(backend=backend, **kw))
    d, device = dist_.init("auto")
    assert device == "cuda:0" and calls["set"] == torch.device("cuda", 0)
    assert calls["backend"] == "nccl" and calls["device_id"] == torch.device("cuda", 0)
    assert (d.rank, d.world, d.local_rank) == (1, 2, 1)


def test_training_leaves_the_process_group_on_errors(monkeypatch, tmp_path):
    left = []
    monkeypatch.setattr(dist_, "init", lambda pref: (dist_.Dist(0, 2), "cpu"))
    monkeypatch.setattr(dist_, "shutdown", lambda: left.append(True))
    with pytest.raises(GanforgeError, match="nothing to resume"):
        train(None, tmp_path / "none", resume=True, progress=False)
    assert left == [True]


# -- defect 7: every command takes --device, auto by default ----------------------------------


def test_every_command_takes_device_auto_by_default():
    from ganforge.cli import build_parser

    parser = build_parser()
    argv = {"sample": ["run", "--grid", "g.png"], "interpolate": ["run", "--out", "w.gif"],
            "translate": ["run", "--in", "x", "--out", "o"], "evaluate": ["run"],
            "serve": ["run"]}
    for command, args in argv.items():
        assert parser.parse_args([command, *args]).device == "auto", command
        assert parser.parse_args([command, *args, "--device", "cpu"]).device == "cpu"


def test_sample_and_interpolate_run_on_the_device_asked_for(fmnist_dir, tmp_path,
                                                            monkeypatch, capsys):
    """--device reaches the generator (recorded here), and a GPU asked for where there is
    none is one clear error about the device, on a run that exists."""
    from ganforge import sample
    from ganforge.cli import main

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, steps=2, device="cpu"), run, progress=False)
    seen, load = [], sample.load_generator

    def spy(*args, **kw):
        gen = load(*args, **kw)
        seen.append(str(gen.device))
        return gen

    monkeypatch.setattr(sample, "load_generator", spy)
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"),
                 "--device", "cpu:0"]) == 0
    assert main(["interpolate", str(run), "--out", str(tmp_path / "walk.gif"),
                 "--device", "cpu:0"]) == 0
    assert seen == ["cpu:0", "cpu:0"]
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "x"),
                 "--device", "cuda:7" if torch.cuda.is_available() else "cuda"]) == 2
    assert "error: device 'cuda" in capsys.readouterr().err


def test_successive_latent_draws_differ():
    """Draw i of the latent stream is seeded from (seed, i): every draw is new, and the same
    stream from its start gives the same draws (what resume relies on)."""
    from ganforge.runstate import NoiseStream

    stream = NoiseStream(5, torch.device("cpu"))
    draws = [torch.randn(64, 16, generator=stream.next()) for _ in range(6)]
    for i in range(len(draws)):
        for j in range(i):
            assert not torch.equal(draws[i], draws[j]), (i, j)
    again = NoiseStream(5, torch.device("cpu"))
    assert all(torch.equal(torch.randn(64, 16, generator=again.next()), d) for d in draws)
    assert not torch.equal(torch.randn(64, 16, generator=NoiseStream(6, torch.device("cpu"))
                                       .next()), draws[0])


# -- speed: no host synchronisation per step --------------------------------------------------


class CrossDeviceCopies(TorchDispatchMode):
    """Counts copies between devices (each one from the host waits for queued GPU work)."""

    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            dev = kwargs.get("device")
            if dev is not None and torch.device(dev) != args[0].device:
                self.copies += 1
        return func(*args, **kwargs)


def test_sampler_slices_a_permutation_on_the_data_device():
    """The data order is drawn on the CPU and moved to the device once per epoch, not once
    per batch (the meta device stands in for a GPU)."""
    from ganforge.train_utils import BatchSampler

    s = BatchSampler({"real": torch.zeros(10, 1, 4, 4, dtype=torch.uint8, device="meta")}, 0)
    with CrossDeviceCopies() as spy:
        for _ in range(7):  # 28 images of 10: two new epochs
            batch = s.next(4, rank=1, world=2)
    assert spy.copies == 2 and batch["real"].shape == (2, 1, 4, 4)


def test_history_pool_reads_nothing_back_from_the_device():
    """CycleGAN's pool keeps its fill count on the host too: on the meta device (a GPU
    stand-in whose values cannot be read at all) it still works."""
    from ganforge.nets.pool import HistoryPool

    pool = HistoryPool(3, 1, 4).to("meta")
    for _ in range(3):
        out = pool.query("a", torch.zeros(2, 1, 4, 4, device="meta"))
    assert out.shape == (2, 1, 4, 4) and pool.filled == {"a": 3, "b": 0}
    other = HistoryPool(3, 1, 4)
    other.load_state_dict({k: torch.full_like(v, 2) if "count" in k else v
                           for k, v in other.state_dict().items()})
    assert other.filled == {"a": 2, "b": 2}


def test_sync_bn_and_compile_options(fmnist_dir, tmp_path, monkeypatch):
    from ganforge.train_utils import compile_nets, sync_batchnorm
    from ganforge.variants import get_variant

    cfg = cfg_for(fmnist_dir, sync_bn=True)
    nets = get_variant("dcgan").build(cfg, 28, 1)
    assert sync_batchnorm(nets, torch.device("cpu"), dist_.Dist()) is nets  # one process
    with pytest.raises(GanforgeError, match="sync_bn=true needs CUDA"):
        sync_batchnorm(nets, torch.device("cpu"), dist_.Dist(0, 2))
    synced = sync_batchnorm(nets, torch.device("cuda"), dist_.Dist(0, 2))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced["G"].modules())
    assert synced["G"].state_dict().keys() == nets["G"].state_dict().keys()
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    compile_nets(nets["G"], nets["D"], cfg, progress=False)
    assert compiled == [nets["G"], nets["D"]]
    compiled.clear()
    compile_nets(nets["G"], nets["D"], cfg_for(fmnist_dir, variant="wgan-gp"), progress=False)
    assert compiled == [nets["G"]]  # D eager: the gradient penalty's double backward
    compiled.clear()
    compile_nets(nets["G"], nets["D"], cfg_for(fmnist_dir, d_norm="none", r1_gamma=1.0),
                 progress=False)
    assert compiled == [nets["G"]]  # and R1's


@pytest.mark.slow
def test_compile_trains_the_same_model(fmnist_dir, tmp_path):
    """compile=true (torch.compile of G and D in place; 1-2 minutes of compiling on a CPU):
    the same checkpoint keys and, up to float rounding, the same weights as eager; a compiled
    run resumes without compile (the key may change on resume)."""
    train(cfg_for(fmnist_dir, steps=6, compile=True), tmp_path / "compiled", progress=False)
    train(cfg_for(fmnist_dir, steps=6), tmp_path / "eager", progress=False)
    a, b = final(tmp_path / "compiled"), final(tmp_path / "eager")
    for prefix in ("G", "D"):
        sa, sb = a.module_state(prefix), b.module_state(prefix)
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5)
    train(None, tmp_path / "compiled", resume=True, overrides={"steps": 8, "compile": False},
          progress=False)
    assert final(tmp_path / "compiled").step == 8
