"""The training health monitor on real runs: NaN rollback, collapse detection, stop."""

import json

import pytest
import torch

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.health import HealthMonitor, diversity
from ganforge.train import TrainingStopped, train

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16, "log_every": 5,
        "sample_every": 5, "grid_size": 16}


def records(run, kind):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def nan_once(at_step):
    fired = []

    def hook(trainer):
        if trainer.step == at_step and not fired:
            fired.append(True)
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("nan"))
    return hook


def test_nan_is_detected_and_rolled_back(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "steps": 20, **TINY}])
    res = train(cfg, run, progress=False, fault_hook=nan_once(7))
    assert res.step == 20
    (event,) = records(run, "health")
    assert event["problem"] == "non-finite" and event["step"] == 10
    assert event["action"] == "rolled back to step 5, learning rates x0.5"
    ckpt = checkpoint.load_checkpoint(res.checkpoint)
    assert all(torch.isfinite(t).all() for k, t in ckpt.tensors.items() if k.startswith("G."))
    assert ckpt.meta["state"]["lr_scale"] == 0.5 and ckpt.meta["state"]["rollbacks"] == 1
    assert [r["step"] for r in records(run, "train")] == [5, 10, 15, 20]
    assert records(run, "train")[-1]["lr_scale"] == 0.5


def test_on_problem_stop_leaves_the_last_good_checkpoint(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "steps": 20,
                         "on_problem": "stop", **TINY}])
    with pytest.raises(TrainingStopped, match="non-finite at step 10.*try: lower lr_d"):
        train(cfg, run, progress=False, fault_hook=nan_once(7))
    ckpt = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert ckpt.step == 5
    assert records(run, "health")[0]["action"] == "stop"


def test_collapsed_generator_is_flagged(fmnist_dir, tmp_path):
    fired = set()

    def hook(trainer):
        last = [m for m in trainer.G.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
        with torch.no_grad():
            if trainer.step == 3 and 3 not in fired:  # make G diverse (saturated outputs)
                fired.add(3)
                last.weight.mul_(300.0)
            if trainer.step == 12 and 12 not in fired:  # then collapse it to one image
                fired.add(12)
                last.weight.zero_()
    run = tmp_path / "run"
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "steps": 20, "lr_g": 0.0,
                         **TINY}])
    train(cfg, run, progress=False, fault_hook=hook)
    (event,) = records(run, "health")
    assert event["problem"] == "mode collapse" and event["step"] == 15
    assert event["action"].startswith("rolled back to step 10")


def test_diversity_and_monitor_units(fmnist_dir):
    from ganforge.data import load_dataset

    real = torch.from_numpy(load_dataset(fmnist_dir).images[:32].copy()).permute(0, 3, 1, 2)
    real = real.float() / 127.5 - 1
    cfg = build_config([{}])
    mon = HealthMonitor(cfg, diversity(real))
    assert diversity(real) > 1.0
    assert diversity(real[:1].repeat(32, 1, 1, 1)) == pytest.approx(0.0, abs=1e-4)
    assert mon.check_samples(1, torch.zeros(32, 1, 28, 28)) is None  # untrained: not a fall
    assert mon.check_samples(2, real.flip(0)) is None
    p = mon.check_samples(3, real[:1].repeat(32, 1, 1, 1))
    assert p is not None and p.kind == "mode collapse"
    # D right on everything for longer than stuck_steps is reported
    cfg = build_config([{"stuck_steps": 120, "log_every": 50}])
    mon = HealthMonitor(cfg, 1.0)
    rec = {"d_acc_real": 1.0, "d_acc_fake": 1.0}
    assert mon.check_interval(50, rec, 0) is None
    assert mon.check_interval(100, rec, 0) is None
    assert mon.check_interval(150, rec, 0).kind == "discriminator wins"
    assert mon.check_interval(200, {"d_real": 3e6}, 0).kind == "exploding critic"
