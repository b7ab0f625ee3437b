"""Loss functions against closed-form values."""

import math

import pytest
import torch

from ganforge import losses
from ganforge.config import build_config
from ganforge.variants import get_variant
from ganforge.variants.base import adversarial_d


def linear_critic(w: torch.Tensor):
    return lambda x: (x * w).flatten(1).sum(1)


def test_gradient_penalty_zero_for_unit_gradient_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(3, 8, 8)
    w /= w.norm()  # ||∇D|| = 1 over all of C, H, W - but not per channel
    real, fake = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    gp = losses.gradient_penalty(linear_critic(w), real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_takes_norm_over_all_dims():
    # a gradient of norm 2 over (C, H, W) gives (2 - 1)^2 = 1; a channel-only norm would not
    w = torch.full((2, 4, 4), 2.0 / math.sqrt(32))
    real, fake = torch.randn(5, 2, 4, 4), torch.randn(5, 2, 4, 4)
    assert losses.gradient_penalty(linear_critic(w), real, fake).item() == pytest.approx(1.0)


def test_gradient_penalty_mixes_with_uniform_eps():
    seen = []

    def critic(x):
        seen.append(x.detach())
        return x.flatten(1).sum(1)

    torch.manual_seed(1)
    real, fake = torch.ones(4000, 1, 1, 1), torch.zeros(4000, 1, 1, 1)
    losses.gradient_penalty(critic, real, fake)
    eps = seen[0].flatten()  # x̂ = eps*1 + (1-eps)*0 = eps
    assert eps.min() >= 0 and eps.max() <= 1  # normal draws would leave [0, 1]
    assert eps.mean().item() == pytest.approx(0.5, abs=0.02)
    assert eps.var().item() == pytest.approx(1 / 12, abs=0.005)


def test_bce_hinge_wasserstein_closed_form():
    zero = torch.zeros(8)
    assert losses.bce_d(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert losses.bce_g(zero).item() == pytest.approx(math.log(2))
    big = torch.full((8,), 20.0)
    assert losses.bce_d(big, -big).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.hinge_d(torch.ones(4), -torch.ones(4)).item() == 0.0
    assert losses.hinge_d(torch.zeros(4), torch.zeros(4)).item() == 2.0
    assert losses.wasserstein_d(torch.full((4,), 3.0), torch.full((4,), 1.0)).item() == -2.0
    assert losses.wasserstein_g(torch.full((4,), 1.5)).item() == -1.5


def test_one_sided_label_smoothing_closed_form():
    """Real target t = 0.9: per real logit x, -(t log σ(x) + (1 - t) log(1 - σ(x))); fakes keep
    the target 0 (one-sided). At logit 0 any target gives log 2, so the logits are not 0."""
    def sig(v):
        return 1 / (1 + math.exp(-v))

    real, fake = torch.tensor([2.0, -1.0, 0.5, 4.0]), torch.tensor([-3.0, 1.0])
    expected = (sum(-(0.9 * math.log(sig(x)) + 0.1 * math.log(1 - sig(x))) for x in real.tolist())
                / 4 + sum(-math.log(1 - sig(y)) for y in fake.tolist()) / 2)
    assert losses.bce_d(real, fake, 0.9).item() == pytest.approx(expected, rel=1e-6)
    assert losses.bce_d(real, fake).item() == pytest.approx(
        sum(-math.log(sig(x)) for x in real.tolist()) / 4
        + sum(-math.log(1 - sig(y)) for y in fake.tolist()) / 2, rel=1e-6)
    # the MLP GAN's D loss is smoothed (0.9), DCGAN's is not
    for variant, target in (("mlp", 0.9), ("dcgan", 1.0)):
        cfg = build_config([{"variant": variant}])
        assert cfg.real_label == target
        assert adversarial_d(cfg, real, fake).item() == pytest.approx(
            losses.bce_d(real, fake, target).item())


def test_r1_penalty_of_linear_critic_is_squared_weight_norm():
    w = torch.randn(1, 4, 4)
    r1 = losses.r1_penalty(linear_critic(w), torch.randn(6, 1, 4, 4))
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-6)


def test_weight_clipping_bounds_every_critic_weight():
    cfg = build_config([{"variant": "wgan", "d_width": 8, "g_width": 8}])
    variant = get_variant("wgan")
    nets = variant.build(cfg, 28, 1)
    with torch.no_grad():
        for p in nets["D"].parameters():
            p.mul_(100.0)
    variant.after_d_step(nets, cfg)
    for p in nets["D"].parameters():
        assert p.abs().max().item() <= cfg.clip_value
    assert max(p.abs().max().item() for p in nets["D"].parameters()) == pytest.approx(0.01)
