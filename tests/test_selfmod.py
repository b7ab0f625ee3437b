"""Self-modulated BatchNorm (ganforge.nets.selfmod) on its own, and in the DCGAN G that
`g_selfmod` builds."""

import pytest
import torch
from torch import nn

from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.nets.selfmod import SelfModulatedBatchNorm2d
from ganforge.train_utils import standing_statistics
from ganforge.variants import get_variant


def test_each_sample_gets_the_scale_and_shift_of_its_own_z():
    """y = BN(x) * (1 + gamma(z)) + beta(z), with BN's batch statistics computed here by hand
    and gamma, beta set through the MLP's last layer (hidden units forced to 1)."""
    torch.manual_seed(0)
    layer = SelfModulatedBatchNorm2d(2, z_dim=3, hidden=4).train()
    hidden, out = layer.mlp[0], layer.mlp[2]
    with torch.no_grad():
        hidden.weight.zero_()
        hidden.bias.fill_(1.0)  # every hidden unit is 1 whatever z is ...
        out.weight.zero_()
        out.bias.copy_(torch.tensor([0.5, -0.25, 2.0, 3.0]))  # ... so gamma (.5, -.25), beta (2, 3)
    x = torch.randn(5, 2, 3, 3)
    z = torch.randn(5, 3)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + 1e-5)
    want = x_hat * torch.tensor([1.5, 0.75]).view(1, 2, 1, 1) + torch.tensor([2.0, 3.0]).view(
        1, 2, 1, 1)
    torch.testing.assert_close(layer(x, z), want, atol=1e-5, rtol=1e-5)

    # now through z: the same feature map under two latents comes out differently
    with torch.no_grad():
        hidden.weight.copy_(torch.eye(4, 3))
        hidden.bias.zero_()
        out.weight.copy_(torch.eye(4))
        out.bias.zero_()
    same = x[:1].expand(2, -1, -1, -1)
    zs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = layer.eval()(same, zs)
    # sample 0: hidden (1, 0, 0, 0) -> gamma (1, 0), beta 0: channel 0 doubled, channel 1 kept
    base = (same[0] - layer.norm.running_mean.view(2, 1, 1)) / torch.sqrt(
        layer.norm.running_var.view(2, 1, 1) + 1e-5)
    torch.testing.assert_close(y[0, 0], 2 * base[0])
    torch.testing.assert_close(y[0, 1], base[1])
    torch.testing.assert_close(y[1], base)  # z = 0: no modulation


def test_generator_with_selfmod_is_driven_by_z_at_every_norm():
    """g_selfmod=true replaces every BatchNorm of the DCGAN G (with g_convs too) by a
    self-modulated one; the image keeps its size and range, the MLPs get gradients, and the
    plain G's layout (its state-dict keys, loaded by saved runs) is unchanged."""
    cfg = build_config([{"variant": "dcgan", "g_width": 8, "g_convs": 1, "z_dim": 6,
                         "g_selfmod": True}])
    G = get_variant("dcgan").build(cfg, 28, 3)["G"]
    mods = [m for m in G.modules() if isinstance(m, SelfModulatedBatchNorm2d)]
    plain_norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(mods) == 4  # 7x7 and 14x14, each after its layer and after its 3x3 conv
    assert all(not m.affine for m in plain_norms) and len(plain_norms) == len(mods)
    x = G(torch.randn(4, 6))
    assert x.shape == (4, 3, 28, 28) and x.abs().max() <= 1.0
    x.square().mean().backward()
    assert all(m.mlp[2].weight.grad is not None and m.mlp[2].weight.grad.abs().sum() > 0
               for m in mods)

    assert "project.2.mlp.0.weight" in G.state_dict()

    # the plain G's keys, as every DCGAN-family run saved before the option has them
    plain = get_variant("dcgan").build(build_config([{**cfg.to_dict(), "g_selfmod": False,
                                                      "g_convs": 0}]), 28, 3)["G"]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert list(plain.state_dict()) == ["project.0.weight", *[f"project.2.{k}" for k in bn],
                                        "blocks.0.weight", *[f"blocks.1.{k}" for k in bn],
                                        "blocks.3.weight", "blocks.3.bias"]


def test_a_run_saved_before_the_option_builds_the_plain_generator():
    from ganforge.config import config_from_dict

    saved = build_config([{"variant": "dcgan"}]).to_dict()
    del saved["g_selfmod"]  # as a release before the key wrote it
    assert config_from_dict(saved).g_selfmod is False


def test_in_eval_mode_a_sample_does_not_depend_on_its_batch():
    """With running statistics (how sample, evaluate and serve draw) each image depends on its
    own z only: the explorer draws one image or a few hundred at a time."""
    cfg = build_config([{"variant": "dcgan", "g_width": 8, "z_dim": 4, "g_selfmod": True}])
    G = get_variant("dcgan").build(cfg, 28, 1)["G"]
    G(torch.randn(16, 4))  # running statistics of something
    G.eval()
    z = torch.randn(6, 4)
    with torch.no_grad():
        torch.testing.assert_close(G(z)[2:3], G(z[2:3]))


@pytest.mark.parametrize("selfmod", [False, True])
def test_the_explorer_finds_directions_in_the_first_block(selfmod):
    """serve's latent directions read the output of G.project through a forward hook: it
    must fire with and without self-modulation."""
    from types import SimpleNamespace

    from ganforge.serve.directions import features

    cfg = build_config([{"variant": "dcgan", "g_width": 8, "z_dim": 4, "g_selfmod": selfmod}])
    G = get_variant("dcgan").build(cfg, 28, 1)["G"].eval()
    gen = SimpleNamespace(G=G, device=torch.device("cpu"), kind="unconditional", classes=[])
    f = features(gen, torch.randn(5, 4), batch_size=2)
    assert f.shape == (5, 16 * 7 * 7)  # G.project's output: width 8 * 2 channels at 7x7


def test_standing_statistics_reach_the_modulated_norms():
    """The EMA generator's standing statistics (ganforge.train_utils) reset and recompute the
    BatchNorm inside each self-modulated norm like a plain one."""
    cfg = build_config([{"variant": "dcgan", "g_width": 8, "z_dim": 4, "g_selfmod": True}])
    G = get_variant("dcgan").build(cfg, 28, 1)["G"].eval()
    norm = next(m for m in G.modules() if isinstance(m, SelfModulatedBatchNorm2d)).norm
    norm.running_mean.fill_(100.0)
    with torch.no_grad():
        standing_statistics(G, lambda: G(torch.randn(16, 4)))
    assert norm.running_mean.abs().max() < 10 and not G.training
    assert norm.num_batches_tracked == 8  # the eight batches of standing statistics


def test_variants_without_the_dcgan_generator_refuse_it():
    for variant in ("cgan", "small-data", "mlp"):
        with pytest.raises(GanforgeError, match=f"g_selfmod.*{variant} does not read it"):
            get_variant(variant).check(build_config([{"variant": variant, "g_selfmod": True}]))


def test_the_fast_preset_modulates_its_generator():
    """The recipe Fashion-MNIST-sized data gets (docs/BENCHMARKS.md, round 15)."""
    from ganforge.config import PRESETS

    cfg = build_config([PRESETS["fast"]])
    G = get_variant(cfg.variant).build(cfg, 28, 1)["G"]
    assert cfg.g_selfmod and any(isinstance(m, SelfModulatedBatchNorm2d) for m in G.modules())
