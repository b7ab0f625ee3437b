"""The training loop on real data: exact resume, checkpoints, sampling, schedules."""

import json

import numpy as np
import pytest
import torch

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator, write_samples
from ganforge.train import train

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16, "log_every": 5,
        "sample_every": 10, "grid_size": 16}


def cfg_for(data_dir, **kw):
    return build_config([{"data": str(data_dir), **TINY, **kw}])


def weights(run_dir, prefix="G"):
    ckpt = checkpoint.load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    return ckpt.module_state(prefix)


@pytest.mark.parametrize("variant,extra", [("dcgan", {"ema": 0.9}),
                                           ("wgan-gp", {}),
                                           ("mlp", {"schedule": "adaptive"})])
def test_resume_is_bit_identical(fmnist_dir, tmp_path, variant, extra):
    straight = tmp_path / "straight"
    train(cfg_for(fmnist_dir, variant=variant, steps=20, **extra), straight, progress=False)
    split = tmp_path / "split"
    train(cfg_for(fmnist_dir, variant=variant, steps=10, **extra), split, progress=False)
    train(None, split, resume=True, overrides={"steps": 20}, progress=False)
    for prefix in ("G", "D") + (("G_ema",) if "ema" in extra else ()):
        a, b = weights(straight, prefix), weights(split, prefix)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{prefix}.{k} differs after resume"
    log_a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b] == [5, 10, 15, 20]
    assert [r["loss_G"] for r in log_a] == [r["loss_G"] for r in log_b]


def test_run_directory_contents(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    res = train(cfg_for(fmnist_dir, variant="dcgan", steps=20), run, progress=False)
    assert res.step == 20
    assert json.loads((run / "config.json").read_text())["variant"] == "dcgan"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000010.png",
                                                                   "step-000020.png"]
    assert {"losses.png", "accuracy.png", "grad_norms.png"} <= {p.name for p in
                                                                (run / "plots").iterdir()}
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss_D", "loss_G", "d_acc_real", "d_acc_fake", "g_fool_rate", "grad_norm_D",
                "grad_norm_G", "images_per_s"):
        assert key in rec and np.isfinite(rec[key])
    assert rec["kimg"] == pytest.approx(20 * 16 / 1000)
    ckpt = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert ckpt.step == 20 and ckpt.config["variant"] == "dcgan"
    assert {"rng.torch", "rng.noise", "z_fixed"} <= set(ckpt.tensors)


def test_n_critic_counts_d_steps(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="wgan", steps=4, log_every=4), run, progress=False)
    state = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors").meta["state"]
    assert state["sched"]["g_steps"] == 4 and state["sched"]["d_steps"] == 20


def test_adaptive_schedule_logs_its_choices(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=10, schedule="adaptive"), run,
          progress=False)
    state = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors").meta["state"]
    s = state["sched"]
    assert s["g_choices"] == 10 and s["g_steps"] == 10
    assert s["d_steps"] == 5 * s["d_choices"]
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < rec["g_choice_rate"] <= 1


def test_sampling_is_deterministic_and_uses_ema(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=10, ema=0.5), run, progress=False)
    gen = load_generator(run)
    assert gen.ema and gen.size == 28 and gen.channels == 1
    a = write_samples(gen, 6, tmp_path / "a", seed=3)
    b = write_samples(load_generator(run), 6, tmp_path / "b", seed=3)
    c = write_samples(gen, 6, None, seed=4)
    assert a.shape == (6, 28, 28, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for i in range(6):
        assert (tmp_path / "a" / f"sample-{i:05d}.png").read_bytes() == \
            (tmp_path / "b" / f"sample-{i:05d}.png").read_bytes()
    half = gen.generate(gen.latents(6, 3), truncation=0.5)
    assert not np.array_equal(a, half)


def test_second_run_into_same_dir_and_resume_without_run(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=5), run, progress=False)
    before = (run / "checkpoints" / "latest.safetensors").read_bytes()
    with pytest.raises(GanforgeError, match="already holds a run"):
        train(cfg_for(fmnist_dir, variant="dcgan", steps=5), run, progress=False)
    with pytest.raises(GanforgeError, match="cannot change lr_d"):
        train(None, run, resume=True, overrides={"lr_d": 0.1, "steps": 10}, progress=False)
    assert (run / "checkpoints" / "latest.safetensors").read_bytes() == before
    with pytest.raises(GanforgeError, match="nothing to resume"):
        train(None, tmp_path / "empty", resume=True, progress=False)


def test_minutes_limit_stops_and_checkpoints(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    res = train(cfg_for(fmnist_dir, variant="mlp", steps=100000, minutes=0.05), run,
                progress=False)
    assert 0 < res.step < 100000
    assert checkpoint.load_checkpoint(res.checkpoint).step == res.step


def test_tensorboard_event_files_mirror_the_log(fmnist_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=10), run, progress=False)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    loss_d = acc.Scalars("train/loss_D")
    assert [e.step for e in loss_d] == [r["step"] for r in logged]
    assert [e.value for e in loss_d] == pytest.approx([r["loss_D"] for r in logged])
    assert [e.step for e in acc.Images("samples")] == [10]
    off = tmp_path / "off"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=5, tensorboard=False), off, progress=False)
    assert not (off / "tensorboard").exists()


def _count_g_forwards(data_dir, tmp_path, **kw):
    from ganforge.train import Trainer

    trainer = Trainer(cfg_for(data_dir, variant="dcgan", **kw), tmp_path / "run", progress=False)
    calls = []
    trainer.G.register_forward_hook(lambda m, i, o: calls.append(o))
    for _ in range(3):
        trainer.d_step(trainer.real_batch())
        trainer.g_step()
    return trainer, calls


def test_g_step_scores_the_d_steps_fakes(fmnist_dir, tmp_path):
    _, reused = _count_g_forwards(fmnist_dir, tmp_path / "a")
    _, fresh = _count_g_forwards(fmnist_dir, tmp_path / "b", reuse_fakes=False)
    assert len(reused) == 3 and len(fresh) == 6  # one G forward per iteration instead of two
    # the first iteration's fakes are the same images either way (same z, same weights)
    torch.testing.assert_close(reused[0], fresh[0])
    # and D's loss saw them detached: the G step is the only one that moves G
    trainer, _ = _count_g_forwards(fmnist_dir, tmp_path / "c", n_critic=2)
    assert not trainer.reuse  # two D steps per G step: the G step makes its own fakes


@pytest.mark.parametrize("extra,tol", [({"channels_last": True}, 1e-4), ({"amp": "bf16"}, 0.05)])
def test_fast_paths_train_the_same_model(fmnist_dir, tmp_path, extra, tol):
    """channels_last changes only the memory layout and bf16 only the matmul precision: after
    a few steps the weights stay within float noise (bf16: a few per cent) of float32's."""
    train(cfg_for(fmnist_dir, variant="dcgan", steps=4), tmp_path / "ref", progress=False)
    train(cfg_for(fmnist_dir, variant="dcgan", steps=4, **extra), tmp_path / "fast",
          progress=False)
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "fast")
    worst = 0.0
    for k in a:
        if a[k].is_floating_point() and a[k].ndim > 1:
            worst = max(worst, ((a[k] - b[k]).abs().max() / a[k].abs().max()).item())
    assert worst <= tol
    if "amp" in extra:
        assert worst > 0  # bf16 really was in use
