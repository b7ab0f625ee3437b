"""The training loop on real data: exact resume, checkpoints, sampling, schedules."""

import json
import math
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import PixelFeatures

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import interpolation_frames, load_generator, slerp, write_samples
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
    # truncation psi is z <- psi * z: the images of psi * z, exactly
    z = gen.latents(6, 3)
    for psi in (0.5, 0.1):
        half = gen.generate(z, truncation=psi)
        np.testing.assert_array_equal(half, gen.generate(psi * z))
        assert not np.array_equal(half, a)
    # interpolation walks the great circle between the two latents (slerp), or a line
    za, zb = gen.latents(1, 1)[0], gen.latents(1, 2)[0]
    frames = interpolation_frames(gen, 1, 2, frames=5)
    np.testing.assert_array_equal(frames, gen.generate(slerp(za, zb, torch.linspace(0, 1, 5))))
    line = interpolation_frames(gen, 1, 2, frames=5, spherical=False)
    np.testing.assert_array_equal(line[2], gen.generate(((za + zb) / 2)[None])[0])


def test_slerp_closed_form():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])  # a quarter circle of radius 2
    angle = t * math.pi / 2
    torch.testing.assert_close(slerp(a, b, t), 2 * torch.stack([angle.cos(), angle.sin()], 1))
    # in 16-d: the ends are a and b, equal norms stay equal, the angle to a grows linearly
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    b = b / b.norm() * a.norm()
    path = slerp(a, b, torch.linspace(0, 1, 9))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(9))
    cos = (path @ a) / (path.norm(dim=1) * a.norm())
    angles = torch.arccos(cos.clamp(-1, 1))
    torch.testing.assert_close(angles, torch.linspace(0, 1, 9) * angles[-1], atol=1e-5, rtol=0)
    # parallel latents: the straight line
    torch.testing.assert_close(slerp(a, 3 * a, t), a + (2 * a) * t[:, None])


def test_g_ema_is_the_exponential_average_of_g(fmnist_dir, tmp_path):
    """After k G steps G_ema = d^k G_0 + (1 - d) sum_i d^(k-i) G_i (the closed form of
    ema <- d ema + (1 - d) G; here at a d the ramp min(d, (1+t)/(10+t)) has reached), and
    between intervals its buffers (BatchNorm statistics) are G's."""
    from ganforge.train import Trainer

    d = 0.7
    trainer = Trainer(cfg_for(fmnist_dir, variant="dcgan", ema=d), tmp_path / "run",
                      progress=False)
    trainer.sched["g_steps"] = 100  # past the ramp: (1 + 100) / (10 + 100) > 0.7
    snapshots = [{k: v.clone() for k, v in trainer.G.named_parameters()}]  # G_0 = G_ema at 0
    for _ in range(4):
        trainer.d_step(trainer.real_batch())
        trainer.g_step()
        snapshots.append({k: v.detach().clone() for k, v in trainer.G.named_parameters()})
    k = len(snapshots) - 1
    ema = dict(trainer.G_ema.named_parameters())
    for name in ema:
        expected = d ** k * snapshots[0][name] + sum(
            (1 - d) * d ** (k - i) * snapshots[i][name] for i in range(1, k + 1))
        assert not torch.equal(snapshots[k][name], snapshots[0][name])  # G did move
        torch.testing.assert_close(ema[name], expected, rtol=1e-5, atol=1e-7)
    for (name, b_ema), b in zip(trainer.G_ema.named_buffers(), trainer.G.buffers(), strict=True):
        assert torch.equal(b_ema, b), name


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


def test_resume_of_a_checkpoint_older_than_a_config_key(fmnist_dir, tmp_path):
    """A checkpoint written before a config key existed (here g_convs/d_convs) resumes with
    the key at its default: setting that default is no change, another value is refused."""
    import hashlib
    import struct

    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=2), run, progress=False)
    latest = run / "checkpoints" / "latest.safetensors"
    raw = latest.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["ganforge"])
    for key in ("g_convs", "d_convs"):
        del meta["config"][key]
    plain = {k: v for k, v in meta.items() if k not in ("content_sha256", "header_sha256")}
    meta["header_sha256"] = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
    latest.write_bytes(st_save(st_load(raw), metadata={"ganforge": json.dumps(meta)}))
    with pytest.raises(GanforgeError, match="cannot change d_convs"):
        train(None, run, resume=True, overrides={"d_convs": 1, "steps": 4}, progress=False)
    result = train(None, run, resume=True, overrides={"d_convs": 0, "g_convs": 0, "steps": 4},
                   progress=False)
    assert result.step == 4


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "train.lock"}


def test_resume_refuses_other_data_and_other_classes(fmnist_dir, tmp_path):
    """--resume with --data pointing elsewhere: images of the same size but other content
    (content hash), or the same images filed under other class names, are refused and the
    run is left as it was."""
    from PIL import Image

    from ganforge import data

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=2), run, progress=False)
    other = data.prepare("fashion-mnist:test", tmp_path / "other", limit=300, progress=False)
    assert (other.size, other.channels, len(other)) == (28, 1, 300)
    before = _tree(run)
    with pytest.raises(GanforgeError, match="is not the data this run was trained on"):
        train(None, run, resume=True, overrides={"data": str(other.path), "steps": 4},
              progress=False)
    assert _tree(run) == before

    images = data.load_dataset(fmnist_dir).images
    for names, where in ((("bag", "shoe"), "labelled"), (("bags", "shoes"), "renamed")):
        for k, name in enumerate(names):
            (tmp_path / where / name).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(images[2 * i + k, :, :, 0]).save(
                    tmp_path / where / name / f"{i}.png")
    cond = {"variant": "cgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 4,
            "log_every": 1, "sample_every": 2, "grid_size": 4, "size": 28, "steps": 2}
    run = tmp_path / "cgan"
    train(build_config([{**cond, "data": str(tmp_path / "labelled")}]), run, progress=False)
    before = _tree(run)
    # the same pixels in the same order (so the same content hash), other class names
    with pytest.raises(GanforgeError, match=r"has classes \['bags', 'shoes'\] but the run was "
                       r"trained on \['bag', 'shoe'\]"):
        train(None, run, resume=True, overrides={"data": str(tmp_path / "renamed"), "steps": 4},
              progress=False)
    assert _tree(run) == before


def test_a_second_training_process_on_a_run_is_refused(fmnist_dir, tmp_path):
    """While one process trains a run (it holds the run lock), a second `train --resume` on
    it is refused and changes nothing."""
    from conftest import run_cli

    from ganforge.train_utils import RunLock

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, variant="dcgan", steps=2), run, progress=False)
    before = _tree(run)
    lock = RunLock(run)  # what the first training process holds
    try:
        r = run_cli("train", "--out", str(run), "--resume", "--steps", "4", "--no-progress")
    finally:
        lock.release()
    assert r.returncode == 2 and f"{run} is in use by another training process" in r.stderr
    assert _tree(run) == before
    r = run_cli("train", "--out", str(run), "--resume", "--steps", "3", "--no-progress")
    assert r.returncode == 0 and "trained to step 3" in r.stdout  # once it is released


def test_running_out_of_rollbacks_stops_the_run(fmnist_dir, tmp_path):
    """max_rollbacks=1: the first NaN is rolled back, the second stops the run with the last
    good checkpoint kept."""
    from ganforge.train import TrainingStopped

    fired = set()

    def nan_at_3_and_7(trainer):
        if trainer.step in (3, 7) and trainer.step not in fired:
            fired.add(trainer.step)
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("nan"))

    run = tmp_path / "run"
    cfg = cfg_for(fmnist_dir, variant="dcgan", steps=12, log_every=2, sample_every=2,
                  max_rollbacks=1)
    with pytest.raises(TrainingStopped, match="stopped after 1 rollbacks: non-finite at step 8"):
        train(cfg, run, progress=False, fault_hook=nan_at_3_and_7)
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["action"]) for r in log if r["kind"] == "health"] == [
        (4, "rolled back to step 2, learning rates x0.5"), (8, "stop")]
    ckpt = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert ckpt.step == 6 and ckpt.meta["state"]["rollbacks"] == 1
    assert all(torch.isfinite(t).all() for k, t in ckpt.tensors.items() if k.startswith("G."))


def test_minutes_limit_stops_and_checkpoints(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    with mock.patch("ganforge.metrics.training.FeatureExtractor", PixelFeatures), \
            mock.patch("ganforge.metrics.training.FEATURE_DIM", 64):
        # sample_every 1: the clock stops the run on a step that had its interval (and no
        # evaluation) already
        res = train(cfg_for(fmnist_dir, variant="mlp", steps=100000, minutes=0.05,
                            sample_every=1), run, progress=False)
    assert 0 < res.step < 100000
    assert checkpoint.load_checkpoint(res.checkpoint).step == res.step
    # stopped by the clock before its first quick FID (eval_every 1,000): scored at the end
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert res.step < 1000 and [r["step"] for r in log if r["kind"] == "eval"] == [res.step]
    assert (run / "checkpoints" / "best.safetensors").exists()


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


def test_ema_decay_ramps_up_to_its_setting():
    from ganforge.train_utils import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.5, 50) == 0.5 and ema_decay(0.5, 5) == pytest.approx(6 / 15)


def test_standing_statistics_are_the_averaged_generators_own(fmnist_dir, tmp_path):
    """standing_statistics: every BatchNorm's running mean/var become the mean/variance of
    its own inputs over all the batches run (recorded here by hooks), whatever they were;
    the trainer gives G_ema such statistics at every interval (not G's copied ones)."""
    from torch import nn

    from ganforge.nets.dcgan import DCGANGenerator
    from ganforge.train import Trainer
    from ganforge.train_utils import standing_statistics

    torch.manual_seed(0)
    G = DCGANGenerator(8, 28, 1, width=8).eval()
    bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(bns))}
    for i, m in enumerate(bns):
        m.running_mean.fill_(5.0)
        m.register_forward_pre_hook(lambda mod, a, i=i: seen[i].append(a[0].detach()))
    zs = iter([torch.randn(16, 8) for _ in range(3)])
    standing_statistics(G, lambda: G(next(zs)), batches=3)
    assert not G.training and all(m.momentum == 0.1 for m in bns)
    for i, m in enumerate(bns):
        x = torch.cat(seen[i]).transpose(0, 1).flatten(1)  # [C, all values]
        torch.testing.assert_close(m.running_mean, x.mean(1), rtol=1e-4, atol=1e-5)
        per_batch_var = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in seen[i]])
        torch.testing.assert_close(m.running_var, per_batch_var.mean(0), rtol=1e-4, atol=1e-5)

    trainer = Trainer(cfg_for(fmnist_dir, variant="dcgan", ema=0.999, steps=10), tmp_path / "r",
                      progress=False)
    trainer.run()
    ema_bn = [b for n, b in trainer.G_ema.named_buffers() if n.endswith("running_mean")]
    g_bn = [b for n, b in trainer.G.named_buffers() if n.endswith("running_mean")]
    assert ema_bn and not any(torch.equal(a, b) for a, b in zip(ema_bn, g_bn, strict=True))


def test_the_first_g_step_moves_g_ema_by_the_ramped_decay(fmnist_dir, tmp_path):
    """At G step 0 the decay is min(0.999, 1/10) = 0.1: G_ema = 0.1 G_0 + 0.9 G_1."""
    from ganforge.train import Trainer

    trainer = Trainer(cfg_for(fmnist_dir, variant="dcgan", ema=0.999), tmp_path / "run",
                      progress=False)
    g0 = {k: v.detach().clone() for k, v in trainer.G.named_parameters()}
    trainer.d_step(trainer.real_batch())
    trainer.g_step()
    for name, p in trainer.G_ema.named_parameters():
        g1 = dict(trainer.G.named_parameters())[name]
        torch.testing.assert_close(p, 0.1 * g0[name] + 0.9 * g1, rtol=1e-5, atol=1e-7)
