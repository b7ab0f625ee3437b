"""Every registered variant builds at tiny widths for 28 and 64 px, 1 and 3 channels, and
takes finite D and G steps. New variants are covered by the registry parametrisation."""

import pytest
import torch
from torch import nn

from ganforge.config import build_config
from ganforge.nets.dcgan import DCGANGenerator, plan_generator
from ganforge.train import make_optimizer
from ganforge.variants import REGISTRY, get_variant


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_variant_builds_and_steps(name, size, channels):
    torch.manual_seed(0)
    cfg = build_config([{"variant": name, "g_width": 8, "d_width": 8, "z_dim": 16}])
    variant = get_variant(name)
    nets = variant.build(cfg, size, channels)
    G, D = nets["G"], nets["D"]
    z = variant.sample_z(4, cfg)
    fake = G(z)
    assert fake.shape == (4, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    real = torch.rand(4, channels, size, size) * 2 - 1
    opt_D = make_optimizer(cfg, D.parameters(), cfg.lr_d)
    opt_G = make_optimizer(cfg, G.parameters(), cfg.lr_g)

    before_D = [p.detach().clone() for p in D.parameters()]
    loss_D, stats = variant.d_loss(nets, cfg, real, fake.detach())
    assert torch.isfinite(loss_D)
    assert 0 <= stats["d_acc_real"] <= 1 and 0 <= stats["g_fool_rate"] <= 1
    opt_D.zero_grad()
    loss_D.backward()
    opt_D.step()
    variant.after_d_step(nets, cfg)
    assert any(not torch.equal(a, b) for a, b in zip(before_D, D.parameters(), strict=False))

    before_G = [p.detach().clone() for p in G.parameters()]
    loss_G, _ = variant.g_loss(nets, cfg, G(variant.sample_z(4, cfg)))
    assert torch.isfinite(loss_G)
    opt_G.zero_grad()
    loss_G.backward()
    opt_G.step()
    assert any(not torch.equal(a, b) for a, b in zip(before_G, G.parameters(), strict=False))
    assert all(torch.isfinite(p).all() for p in [*G.parameters(), *D.parameters()])


def test_defaults_follow_the_spec():
    mlp = build_config([{"variant": "mlp"}])
    assert (mlp.loss, mlp.real_label, mlp.dropout, mlp.lr_g, mlp.beta1, mlp.beta2) == \
        ("bce", 0.9, 0.3, 2e-4, 0.5, 0.999)
    dc = build_config([{"variant": "dcgan"}])
    assert (dc.loss, dc.d_norm, dc.optimizer, dc.lr_d, dc.beta1) == ("bce", "batch", "adam",
                                                                     2e-4, 0.5)
    w = build_config([{"variant": "wgan"}])
    assert (w.loss, w.optimizer, w.lr_d, w.lr_g, w.n_critic, w.clip_value) == \
        ("wasserstein", "rmsprop", 5e-5, 5e-5, 5, 0.01)
    gp = build_config([{"variant": "wgan-gp"}])
    assert (gp.gp_weight, gp.lr_d, gp.beta1, gp.beta2, gp.n_critic) == (10.0, 1e-4, 0.0, 0.9, 5)
    sn = build_config([{"variant": "sngan"}])
    assert (sn.loss, sn.d_norm, sn.lr_d, sn.beta1, sn.beta2) == ("hinge", "spectral", 2e-4,
                                                                 0.0, 0.9)


def test_wgan_gp_critic_has_no_batchnorm_and_sngan_is_spectral():
    cfg = build_config([{"variant": "wgan-gp", "d_width": 8}])
    D = get_variant("wgan-gp").build(cfg, 32, 3)["D"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    cfg = build_config([{"variant": "sngan", "d_width": 8}])
    D = get_variant("sngan").build(cfg, 32, 3)["D"]
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def test_gradient_penalty_with_batchnorm_is_refused():
    from ganforge.errors import GanforgeError

    cfg = build_config([{"variant": "wgan-gp", "d_norm": "batch"}])
    with pytest.raises(GanforgeError, match="BatchNorm"):
        get_variant("wgan-gp").check(cfg)


@pytest.mark.parametrize("size", [28, 32, 48, 64, 80, 100, 128, 256])
def test_generator_covers_sizes(size):
    base, ups = plan_generator(size)
    assert 3 <= base <= 7 and base * 2**ups >= size
    G = DCGANGenerator(8, size, 3, width=4, max_width=16)
    assert G(torch.randn(2, 8)).shape == (2, 3, size, size)
