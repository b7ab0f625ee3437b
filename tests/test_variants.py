"""Every registered variant builds at tiny widths for 28 and 64 px, 1 and 3 channels, and
takes finite D and G steps through the loop's generic interface (batch dict in, losses out).
New variants are covered by the registry parametrisation."""

import numpy as np
import pytest
import torch
from conftest import save_without_config_key
from torch import nn

from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.nets.dcgan import DCGANGenerator, plan_generator
from ganforge.train import make_optimizer
from ganforge.variants import REGISTRY, get_variant

N_CLASSES = 3


def example_parts(kind: str, n: int, size: int, channels: int) -> list[dict[str, np.ndarray]]:
    """Data parts as `load_data` returns them, for each kind of variant."""
    rng = np.random.default_rng(0)

    def images() -> np.ndarray:
        return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)

    if kind == "unconditional":
        return [{"real": images()}]
    if kind == "conditional":
        return [{"real": images(), "label": np.arange(n) % N_CLASSES}]
    return [{"A": images(), "B": images()}]


def as_batch(parts: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    out = {}
    for part in parts:
        for k, a in part.items():
            t = torch.from_numpy(a)
            out[k] = t.permute(0, 3, 1, 2).float() / 127.5 - 1 if t.ndim == 4 else t
    return out


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_variant_builds_and_steps(name, size, channels):
    torch.manual_seed(0)
    cfg = build_config([{"variant": name, "g_width": 8, "d_width": 8, "z_dim": 16,
                         "res_blocks": 2, "grid_size": 6, "pool_size": 2}])
    variant = get_variant(name)
    nets = variant.build(cfg, size, channels, n_classes=N_CLASSES)
    G, D = nets["G"], nets["D"]
    parts = example_parts(variant.kind, 4, size, channels)
    batch = as_batch(parts)
    gen = torch.Generator().manual_seed(0)
    fixed = variant.fixed_inputs(cfg, N_CLASSES, parts, gen)
    shown, _ = variant.show(G, fixed)
    assert shown.shape[1:] == (channels, size, size)
    assert shown.min() >= -1 and shown.max() <= 1
    opt_D = make_optimizer(cfg, D.parameters(), cfg.lr_d)
    opt_G = make_optimizer(cfg, G.parameters(), cfg.lr_g)

    before_D = [p.detach().clone() for p in D.parameters()]
    inputs = variant.sample_inputs(4, cfg, gen, n_classes=N_CLASSES)
    loss_D, stats = variant.d_objective(nets, cfg, batch, inputs)
    assert torch.isfinite(loss_D)
    assert 0 <= stats["d_acc_real"] <= 1 and 0 <= stats["g_fool_rate"] <= 1
    opt_D.zero_grad()
    loss_D.backward()
    opt_D.step()
    variant.after_d_step(nets, cfg)
    assert any(not torch.equal(a, b) for a, b in zip(before_D, D.parameters(), strict=False))

    before_G = [p.detach().clone() for p in G.parameters()]
    inputs = variant.sample_inputs(4, cfg, gen, n_classes=N_CLASSES)
    loss_G, _ = variant.g_objective(nets, cfg, batch, inputs)
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
    cfg = build_config([{"variant": "wgan-gp", "d_norm": "batch"}])
    with pytest.raises(GanforgeError, match="BatchNorm"):
        get_variant("wgan-gp").check(cfg)


@pytest.mark.parametrize("size", [28, 32, 48, 64, 80, 100, 128, 256])
def test_generator_covers_sizes(size):
    base, ups = plan_generator(size)
    assert 3 <= base <= 7 and base * 2**ups >= size
    G = DCGANGenerator(8, size, 3, width=4, max_width=16)
    assert G(torch.randn(2, 8)).shape == (2, 3, size, size)


def test_extra_convolutions_per_resolution():
    """g_convs/d_convs add 3x3 stride-1 convolutions at every hidden resolution (28 px: 7 and
    14 in G, 14 and 7 in D); 0 keeps the paper's layers and so the old checkpoints' keys."""
    def convs3(net: nn.Module) -> list[tuple[int, int]]:
        return [(m.in_channels, m.out_channels) for m in net.modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]

    cfg = build_config([{"variant": "dcgan", "g_width": 8, "d_width": 4, "g_convs": 1,
                         "d_convs": 2}])
    nets = get_variant("dcgan").build(cfg, 28, 1)
    assert convs3(nets["G"]) == [(16, 16), (8, 8)]
    assert convs3(nets["D"]) == [(4, 4), (4, 4), (8, 8), (8, 8)]
    assert nets["G"](torch.randn(3, cfg.z_dim)).shape == (3, 1, 28, 28)
    assert nets["D"](torch.randn(3, 1, 28, 28)).shape == (3,)
    plain = get_variant("dcgan").build(build_config([{"variant": "dcgan"}]), 28, 1)
    assert convs3(plain["G"]) == convs3(plain["D"]) == []
    assert list(plain["G"].state_dict()) == [
        "project.0.weight", *[f"project.2.{k}" for k in ("weight", "bias", "running_mean",
                                                          "running_var", "num_batches_tracked")],
        "blocks.0.weight", *[f"blocks.1.{k}" for k in ("weight", "bias", "running_mean",
                                                        "running_var", "num_batches_tracked")],
        "blocks.3.weight", "blocks.3.bias"]
    assert list(plain["D"].state_dict()) == [
        "features.0.weight", "features.0.bias", "features.2.weight",
        *[f"features.3.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                      "num_batches_tracked")],
        "head.weight", "head.bias"]


def test_extra_convolutions_reach_cgan_and_are_refused_where_unread():
    """cgan's projection D takes d_convs like the DCGAN D it wraps; a variant whose networks
    do not read g_convs/d_convs refuses them instead of silently training without them."""
    cfg = build_config([{"variant": "cgan", "d_width": 4, "d_convs": 1}])
    get_variant("cgan").check(cfg)
    D = get_variant("cgan").build(cfg, 28, 1, 10)["D"]
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in D.modules()) == 2
    assert D(torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])).shape == (3,)
    for variant, key in [("cgan", "g_convs"), ("mlp", "d_convs"), ("small-data", "g_convs"),
                         ("pix2pix", "d_convs"), ("cyclegan", "g_convs")]:
        with pytest.raises(GanforgeError, match=f"{key}.*{variant} does not read it"):
            extra = {"data_b": "domain-b"} if variant == "cyclegan" else {}
            get_variant(variant).check(build_config([{"variant": variant, key: 1, **extra}]))
    for key, value in (("d_mbstd", 4), ("g_upsample", "nearest")):
        with pytest.raises(GanforgeError, match=f"cgan does not read it .set {key}="):
            get_variant("cgan").check(build_config([{"variant": "cgan", key: value}]))


def test_d_convs_at_the_first_resolution_have_no_norm_unless_asked():
    """The 3x3 convs of D's first block (the one that reads the image) are not normalised by
    default (the `fast` preset's FID: docs/BENCHMARKS.md, round 12); d_first_norm gives them
    d_norm as before. Either way the layers after keep their state-dict keys."""
    def first_block(D: nn.Module) -> list[nn.Module]:
        return list(D.features)[2:5]  # after the stride-2 conv and its LeakyReLU: 3x3 conv,
        # its norm's place, LeakyReLU

    new = build_config([{"variant": "dcgan", "d_width": 4, "d_convs": 1}])
    old = build_config([{**new.to_dict(), "d_first_norm": True}])
    assert not new.d_first_norm
    D_new, D_old = (get_variant("dcgan").build(c, 28, 1)["D"] for c in (new, old))
    conv, norm, _ = first_block(D_new)
    assert conv.kernel_size == (3, 3) and conv.bias is not None and isinstance(norm, nn.Identity)
    conv, norm, _ = first_block(D_old)
    assert conv.kernel_size == (3, 3) and conv.bias is None and isinstance(norm, nn.BatchNorm2d)
    for D in (D_new, D_old):  # the second resolution's 3x3 conv keeps its BatchNorm
        assert isinstance(list(D.features)[9], nn.BatchNorm2d)
    keys_new, keys_old = list(D_new.state_dict()), list(D_old.state_dict())
    assert "features.2.bias" in keys_new and not any(k.startswith("features.3.")
                                                    for k in keys_new)
    assert "features.3.running_var" in keys_old and "features.2.bias" not in keys_old
    assert keys_new[keys_new.index("features.5.weight"):] == \
        keys_old[keys_old.index("features.5.weight"):]
    assert D_new(torch.randn(3, 1, 28, 28)).shape == (3,)
    # the preset the recipe gives Fashion-MNIST-sized data is the one that changes
    from ganforge.config import PRESETS

    fast = build_config([PRESETS["fast"]])
    assert fast.d_convs == 1 and not fast.d_first_norm


def test_d_first_norm_is_on_for_runs_saved_before_it():
    from ganforge.config import config_from_dict

    for variant in ("dcgan", "wgan", "wgan-gp", "sngan"):
        saved = build_config([{"variant": variant, "d_convs": 1}]).to_dict()
        del saved["d_first_norm"]  # as a release before the key wrote it
        assert config_from_dict(saved).d_first_norm, variant
        assert not config_from_dict({**saved, "d_first_norm": False}).d_first_norm
    # cgan's projection D does not read the key: an old cgan run gets no value it would refuse
    saved = build_config([{"variant": "cgan", "d_convs": 1}]).to_dict()
    del saved["d_first_norm"]
    get_variant("cgan").check(config_from_dict(saved))
    with pytest.raises(GanforgeError, match="d_first_norm.*cgan does not read it"):
        get_variant("cgan").check(build_config([{"variant": "cgan", "d_first_norm": True}]))


def test_a_fast_run_saved_before_d_first_norm_resumes_and_samples(fmnist_dir, tmp_path):
    """A `fast` run whose checkpoint has BatchNorm after D's first 3x3 conv, saved by a
    release without the `d_first_norm` key, resumes and samples with that layout."""
    from ganforge import checkpoint
    from ganforge.config import PRESETS
    from ganforge.sample import load_generator
    from ganforge.train import train

    run = tmp_path / "run"
    train(build_config([PRESETS["fast"], {"data": str(fmnist_dir), "g_width": 8, "d_width": 4,
                                          "batch_size": 8, "steps": 2, "sample_every": 2,
                                          "eval_n": 0, "tensorboard": False, "amp": "off",
                                          "d_first_norm": True}]), run, progress=False)
    path = run / "checkpoints" / "latest.safetensors"
    assert "D.features.3.running_mean" in checkpoint.load_checkpoint(path).tensors  # the norm
    save_without_config_key(path, "d_first_norm")
    train(None, run, resume=True, overrides={"steps": 4}, progress=False)
    assert checkpoint.load_checkpoint(path).config["d_first_norm"] is True  # saved from now on
    gen = load_generator(run, prefer="latest")
    assert gen.step == 4 and gen.config.d_first_norm


def test_minibatch_std_channel():
    """The appended channel is, for every image, the mean over features and positions of the
    per-feature population std within its group (images i, i + N/g, ...), computed here with
    numpy; a collapsed batch (all images equal) gets 0 there, and D's logit reads it."""
    from ganforge.nets.layers import MinibatchStd

    x = torch.randn(8, 3, 2, 2)
    y = MinibatchStd(4)(x)
    assert y.shape == (8, 4, 2, 2) and torch.equal(y[:, :3], x)
    xs = x.numpy().astype(np.float64)
    for i in range(8):
        group = xs[[i % 2, i % 2 + 2, i % 2 + 4, i % 2 + 6]]
        np.testing.assert_allclose(y[i, 3].numpy(), group.std(axis=0).mean(), rtol=1e-5)
    same = MinibatchStd(4)(x[:1].expand(8, -1, -1, -1))
    assert same[:, 3].abs().max() < 1e-3
    assert MinibatchStd(4)(torch.randn(6, 2, 1, 1)).shape == (6, 3, 1, 1)  # groups of 3

    cfg = build_config([{"variant": "dcgan", "d_width": 4, "d_mbstd": 4}])
    D = get_variant("dcgan").build(cfg, 28, 1)["D"]
    assert D.head.in_features == 9 * 7 * 7  # 8 features and the std channel at 7x7
    varied, collapsed = torch.randn(8, 1, 28, 28), torch.randn(1, 1, 28, 28).expand(8, -1, -1, -1)
    with torch.no_grad():
        D.head.weight.zero_()
        D.head.weight.view(9, 7, 7)[8] = 1.0  # only the std channel counts
        assert (D(varied) > D(collapsed) + 1.0).all()
    with pytest.raises(GanforgeError, match="d_mbstd"):
        get_variant("wgan-gp").check(build_config([{"variant": "wgan-gp", "d_mbstd": 4}]))


@pytest.mark.parametrize("size", [28, 64])
def test_nearest_upsampling_generator(size):
    """g_upsample=nearest doubles each resolution by nearest-neighbour upsampling and a 3x3
    conv instead of a transposed conv: no ConvTranspose2d is left, the output has the data's
    size and range, and every 2x2 block of the upsampled first feature map is constant."""
    cfg = build_config([{"variant": "dcgan", "g_width": 8, "g_upsample": "nearest"}])
    G = get_variant("dcgan").build(cfg, size, 3)["G"]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in G.modules())
    assert sum(isinstance(m, nn.Upsample) for m in G.modules()) == plan_generator(size)[1]
    x = G(torch.randn(4, cfg.z_dim))
    assert x.shape == (4, 3, size, size) and x.abs().max() <= 1.0
    up = G.blocks[0](G.project(torch.randn(2, cfg.z_dim)))
    assert torch.equal(up[..., ::2, ::2], up[..., 1::2, 1::2])
