"""R1 (r1_gamma, r1_every): the penalty's weight in D's loss, its lazy schedule, the configs it
refuses and its rhythm in a real run, resume included."""

import json

import pytest
import torch

from ganforge import losses
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.train import train
from ganforge.variants import get_variant
from ganforge.variants.base import lazy_r1

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16, "log_every": 2,
        "sample_every": 4, "grid_size": 16, "eval_every": 0, "eval_n": 0}


def test_lazy_r1_puts_the_penalty_on_every_kth_d_step_with_k_times_the_weight():
    cfg = build_config([{"d_norm": "none", "r1_gamma": 0.5, "r1_every": 4}])
    assert [lazy_r1(cfg, d).r1_gamma for d in range(9)] == [2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0]
    assert lazy_r1(cfg, 5).lr_d == cfg.lr_d  # everything else is the run's config
    every_step = build_config([{"d_norm": "none", "r1_gamma": 0.5, "r1_every": 1}])
    assert [lazy_r1(every_step, d).r1_gamma for d in range(3)] == [0.5, 0.5, 0.5]


def _grad_norm_sq(D, x: torch.Tensor) -> torch.Tensor:
    """mean over the batch of ||d D(x)_i / d x_i||², by autograd on D itself (small-data's D
    scores each image with a 5x5 map: D(x)_i is its mean)."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).reshape(len(x), -1).mean(1).sum(), x)
    return g.pow(2).flatten(1).sum(1).mean()


@pytest.mark.parametrize("variant", ["dcgan", "cgan", "small-data"])
def test_d_loss_gains_half_gamma_times_the_squared_gradient_norm_at_the_real_images(variant):
    torch.manual_seed(0)
    base = {"variant": variant, "d_norm": "none", "g_width": 8, "d_width": 8, "z_dim": 16}
    v = get_variant(variant)
    n_classes = 10 if variant == "cgan" else 0
    nets = v.build(build_config([base]), 32, 1, n_classes)
    with torch.no_grad():  # from DCGAN's N(0, 0.02) init D's input gradients are ~1e-4
        for p in nets["D"].parameters():
            p.mul_(4.0)
    nets["D"].eval()  # spectral norm (small-data's D) updates its estimate in every train call
    real = torch.rand(6, 1, 32, 32) * 2 - 1
    batch = {"real": real, "label": torch.arange(6) % 10}
    inputs = v.sample_inputs(6, build_config([base]), torch.Generator().manual_seed(1),
                             torch.device("cpu"), n_classes)

    def loss_at(gamma: float):
        cfg = build_config([{**base, "r1_gamma": gamma}])
        torch.manual_seed(2)  # the small-data D's decoders see random crops
        return v.d_objective(nets, cfg, batch, inputs)

    plain, _ = loss_at(0.0)
    penalised, stats = loss_at(100.0)
    if variant == "cgan":
        def D(x):
            return nets["D"](x, batch["label"])
    else:
        D = nets["D"]
    expected = _grad_norm_sq(D, real)
    assert expected.item() > 1e-4
    assert stats["r1"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert (penalised - plain).item() == pytest.approx(50.0 * expected.item(), rel=1e-4)
    assert "r1" not in loss_at(0.0)[1]


@pytest.mark.parametrize("bad", [{"d_norm": "batch"}, {"d_norm": "none", "d_mbstd": 4}])
def test_r1_is_refused_where_critic_outputs_are_not_per_sample(bad):
    cfg = build_config([{"variant": "dcgan", "r1_gamma": 1.0, **bad}])
    with pytest.raises(GanforgeError, match="r1_gamma"):
        get_variant("dcgan").check(cfg)


def test_a_patch_critic_is_penalised_on_its_mean_output_per_image():
    w = torch.randn(3, 1, 4, 4)  # three linear outputs per image, as a patch map would have

    def critic(x):
        return torch.stack([(x * w[k]).flatten(1).sum(1) for k in range(3)], dim=1)

    r1 = losses.r1_penalty(critic, torch.randn(5, 1, 4, 4))
    assert r1.item() == pytest.approx(w.mean(0).pow(2).sum().item(), rel=1e-5)


# n_critic D steps per G step: (R1 calls after 5 G steps, after 10). R1 on D steps 0, 4, 8, ...
# of the whole run; a count started again on resume, or G steps counted, would differ.
RHYTHM = {1: (2, 3), 2: (3, 5)}


@pytest.mark.parametrize("n_critic", list(RHYTHM))
def test_a_run_applies_r1_on_its_schedule_and_keeps_the_rhythm_on_resume(
        n_critic, fmnist_dir, tmp_path, monkeypatch):
    calls = []
    r1_penalty = losses.r1_penalty

    def counted(D, real):
        calls.append(real.shape[0])
        return r1_penalty(D, real)

    monkeypatch.setattr(losses, "r1_penalty", counted)
    run = tmp_path / "run"
    cfg = build_config([{"data": str(fmnist_dir), **TINY, "d_norm": "none", "r1_gamma": 1.0,
                         "r1_every": 4, "steps": 5, "n_critic": n_critic}])
    train(cfg, run, progress=False)
    assert len(calls) == RHYTHM[n_critic][0]
    train(None, run, resume=True, overrides={"steps": 10}, progress=False)
    assert len(calls) == RHYTHM[n_critic][1]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    r1 = [row["r1"] for row in logged if "r1" in row]
    assert r1 and all(v > 0 for v in r1)
