"""The small-data (FastGAN-style) variant: generator sizes and range, skip-layer excitation
that really gates, D's reconstruction targets against an independent computation, decoders
that learn, and a D loss that carries the reconstruction term."""

import pytest
import torch
from conftest import save_without_config_key
from torch import nn

from ganforge.config import build_config
from ganforge.nets.smalldata import (
    SkipExcitation,
    SmallDataDiscriminator,
    SmallDataGenerator,
    channel_table,
)
from ganforge.variants import get_variant
from ganforge.variants.smalldata import reconstruction_loss


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generator_shape_and_range(size):
    torch.manual_seed(0)
    G = SmallDataGenerator(8, size, 3, width=4, max_width=32)
    nn.init.normal_(G.to_image[0].weight, 0.0, 10.0)  # drive the output far past [-1, 1]
    x = G(torch.randn(2, 8))
    assert x.shape == (2, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.abs().max() > 0.99


@pytest.mark.parametrize("size", [28, 48])
def test_sizes_off_the_native_ones_train_under_bfloat16_autocast(size):
    # amp=auto is bf16 autocast on CPUs with native bf16: G's antialiased resize from its
    # native 32/64 px has no CPU bfloat16 kernel, and Fashion-MNIST is 28 px
    torch.manual_seed(0)
    G = SmallDataGenerator(8, size, 1, width=4, max_width=32)
    D = SmallDataDiscriminator(size, 1, width=4, max_width=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(torch.randn(2, 8))
        logits = D(x)
    assert x.shape == (2, 1, size, size) and x.dtype == torch.bfloat16
    logits.float().mean().backward()
    grads = [p.grad for p in G.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_channel_table_has_the_papers_shape():
    # ngf 64 at 256 px is the paper's table: 4: 1024 ... 256: 32
    assert channel_table(256, 32, 4096) == {4: 1024, 8: 512, 16: 256, 32: 128, 64: 128,
                                            128: 64, 256: 32}
    assert channel_table(64, 32) == {4: 256, 8: 128, 16: 64, 32: 32, 64: 32}


def test_excitation_gates_channels():
    torch.manual_seed(0)
    sle = SkipExcitation(8, 4)
    low, high = torch.randn(2, 8, 8, 8), torch.randn(2, 4, 32, 32)
    out = sle(low, high)
    gate = out / high  # one factor per (image, channel), in (0, 1)
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-5)
    assert gate.min() > 0 and gate.max() < 1
    assert not torch.allclose(sle(torch.zeros_like(low), high), out, atol=1e-4)


@pytest.mark.parametrize("size,gated", [(64, ["32", "64"]), (256, ["128", "256"])])
def test_generator_uses_its_excitations(size, gated):
    """Zeroing the low-resolution input of an excitation changes the image: the gate is wired
    into G's path, and the high-resolution map depends on the low one through it."""
    torch.manual_seed(0)
    G = SmallDataGenerator(8, size, 3, width=4, max_width=32)  # BatchNorm on batch statistics
    assert all(r in G.sle for r in gated)
    for p in G.sle.parameters():  # gates far from the initial ~0.5 everywhere
        nn.init.normal_(p, 0.0, 0.5)
    z = torch.randn(4, 8)
    with torch.no_grad():
        before = G(z)
        for r in gated:
            hook = G.sle[r].register_forward_pre_hook(
                lambda m, args: (torch.zeros_like(args[0]), args[1]))
            after = G(z)
            hook.remove()
            assert not torch.allclose(after, before, atol=1e-2), r
            assert torch.equal(G(z), before)


def crop(x: torch.Tensor, q: int) -> torch.Tensor:
    h = x.shape[-1] // 2
    rows, cols = (slice(0, h), slice(h, None))[q // 2], (slice(0, h), slice(h, None))[q % 2]
    return x[:, :, rows, cols]


def block_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean(dim=(3, 5))


@pytest.mark.parametrize("size,recon", [(64, 32), (256, 128)])
def test_reconstruction_targets_are_the_input(size, recon):
    torch.manual_seed(0)
    D = SmallDataDiscriminator(size, 3, width=4, max_width=32).eval()
    x = torch.rand(4, 3, size, size) * 2 - 1
    quadrant = torch.tensor([0, 1, 2, 3])
    logits, pairs = D(x, recon=True, quadrant=quadrant)
    assert torch.equal(logits, D(x))  # the reconstruction changes nothing in the score
    (rec_whole, whole), (rec_part, part) = pairs
    assert rec_whole.shape == whole.shape == rec_part.shape == part.shape == (4, 3, recon, recon)
    assert torch.allclose(whole, block_mean(x, size // recon), atol=1e-6)
    for i in range(4):  # top-left, top-right, bottom-left, bottom-right
        expected = block_mean(crop(x[i:i + 1], i), size // 2 // recon)
        assert torch.allclose(part[i:i + 1], expected, atol=1e-6), i
    # a random quadrant per image when none is given
    _, pairs = D(x, recon=True)
    part = pairs[1][1]
    assert all(any(torch.allclose(part[i:i + 1], block_mean(crop(x[i:i + 1], q), 1))
                   for q in range(4)) for i in range(4))


def test_part_reconstruction_reads_the_same_quadrant_of_the_features():
    """Changing the image's top-left corner changes the top-left part's reconstruction and
    not the bottom-right's: the decoder reads the features of the quadrant it must draw."""
    torch.manual_seed(0)
    D = SmallDataDiscriminator(64, 3, width=4, max_width=32).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    x2 = x.clone()
    x2[:, :, :16, :16] = -x2[:, :, :16, :16]
    for q, changes in ((0, True), (3, False)):
        which = torch.tensor([q, q])
        rec, rec2 = (D(im, recon=True, quadrant=which)[1][1][0] for im in (x, x2))
        assert torch.allclose(rec, rec2, atol=1e-6) is not changes, q


def test_reconstruction_follows_a_wrapper_that_changes_the_input():
    """D wrapped for differentiable augmentation reconstructs the augmented image it saw."""

    class Flipped(nn.Module):
        def __init__(self, D):
            super().__init__()
            self.D = D

        def forward(self, x, *args, **kwargs):
            return self.D(x.flip(-1), *args, **kwargs)

    torch.manual_seed(0)
    D = SmallDataDiscriminator(64, 3, width=4, max_width=32)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    _, pairs = Flipped(D)(x, recon=True, quadrant=torch.tensor([0, 3]))
    assert torch.allclose(pairs[0][1], block_mean(x.flip(-1), 2), atol=1e-6)
    assert not torch.allclose(pairs[0][1], block_mean(x, 2), atol=1e-3)


def shapes(n: int, size: int) -> torch.Tensor:
    """Images with structure to reconstruct: a coloured square on a white ground."""
    g = torch.Generator().manual_seed(1)
    x = torch.ones(n, 3, size, size)
    for i in range(n):
        a, b = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, :, a:a + size // 2, b:b + size // 2] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


def test_decoders_learn_to_reconstruct():
    torch.manual_seed(0)
    D = SmallDataDiscriminator(32, 3, width=8, max_width=64)
    opt = torch.optim.Adam(D.parameters(), 2e-3, betas=(0.5, 0.999))
    real = shapes(16, 32)
    seen = []
    for _ in range(25):
        _, pairs = D(real, recon=True)
        loss = reconstruction_loss(pairs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(loss.item())
    assert sum(seen[-5:]) / 5 < 0.7 * sum(seen[:5]) / 5, seen
    # the loss trains D's own features (the regularisation), not only the decoders
    for name, block in D.downs.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in block.parameters()), name


def test_d_loss_carries_the_reconstruction_term():
    variant = get_variant("small-data")
    torch.manual_seed(0)
    cfg = build_config([{"variant": "small-data", "g_width": 4, "d_width": 4, "z_dim": 8}])
    nets = variant.build(cfg, 64, 3)
    nets["D"].eval()  # no BatchNorm/spectral-norm state changes between the two calls
    real, fake = shapes(4, 64), torch.rand(4, 3, 64, 64) * 2 - 1
    loss = {}
    for w in (0.0, 2.0):
        c = build_config([{**cfg.to_dict(), "recon_weight": w}])
        torch.manual_seed(1)
        loss[w], stats = variant.d_loss(nets, c, real, fake)
    assert stats["loss_recon"] > 0
    assert torch.allclose(loss[2.0] - loss[0.0], 2.0 * stats["loss_recon"], atol=1e-5)
    assert (cfg.loss, cfg.optimizer, cfg.lr_d, cfg.lr_g, cfg.beta1, cfg.beta2) == \
        ("hinge", "adam", 2e-4, 2e-4, 0.5, 0.999)


@pytest.mark.parametrize("size", [64, 128])
def test_d_sees_a_change_of_contrast_that_a_whole_batch_shares(size):
    """D judges real and fake images in separate batches. With BatchNorm after its first
    (linear) conv, each batch's own mean and scale are taken out there, so a batch at a third
    of the contrast, shifted grey, looks to D almost like the batch itself (the washed-out
    grey samples of the Pokémon runs): the first block must not normalise."""
    x = shapes(16, size)
    dull = 0.3 * x - 0.2
    moved = {}
    for input_norm in (False, True):
        torch.manual_seed(1)
        D = SmallDataDiscriminator(size, 3, width=16, input_norm=input_norm).train()
        with torch.no_grad():
            a, b = D(x), D(dull)
        moved[input_norm] = float((a - b).abs().mean() / a.std())
    # measured: 0.70 / 0.14 at 64 px, 0.58 / 0.11 at 128 px (without / with the norm)
    assert moved[False] > 0.3, moved
    assert moved[True] < 0.5 * moved[False], moved  # the blind spot the default removes


def test_d_input_norm_is_off_by_default_and_on_for_runs_saved_before_it():
    from ganforge.config import config_from_dict

    new = build_config([{"variant": "small-data"}])
    assert not new.d_input_norm
    first = get_variant("small-data").build(new, 64, 3)["D"].downs["32"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in first)
    saved = new.to_dict()
    del saved["d_input_norm"]
    old = config_from_dict(saved)  # a small-data run saved before the key existed
    assert old.d_input_norm
    assert any(isinstance(m, nn.BatchNorm2d)
               for m in get_variant("small-data").build(old, 64, 3)["D"].downs["32"])
    assert not config_from_dict({**saved, "d_input_norm": False}).d_input_norm
    other = build_config([{"variant": "dcgan"}]).to_dict()
    del other["d_input_norm"]
    assert not config_from_dict(other).d_input_norm  # the key is the small-data D's only


def test_legacy_names_real_keys_and_variants():
    from ganforge.config import FIELDS, LEGACY
    from ganforge.variants import REGISTRY

    for key, (variants, value) in LEGACY.items():
        assert key in FIELDS and variants and set(variants) <= set(REGISTRY), key
        assert value != FIELDS[key].default, key  # else the entry would change nothing
        for variant in variants:  # and the variant takes the value an old run gets
            get_variant(variant).check(build_config([{"variant": variant, key: value}]))


def test_a_small_data_run_saved_before_d_input_norm_resumes_and_samples(color_folder, tmp_path):
    """A run whose checkpoint has BatchNorm in D's first block, saved by a release without the
    `d_input_norm` key, resumes and samples with the layout it was saved with."""
    from ganforge import checkpoint, data
    from ganforge.sample import load_generator
    from ganforge.train import train

    ds = data.prepare(str(color_folder), tmp_path / "data", size=32, progress=False)
    run = tmp_path / "run"
    train(build_config([{"variant": "small-data", "data": str(ds.path), "g_width": 4,
                         "d_width": 8, "z_dim": 8, "batch_size": 8, "steps": 2,
                         "sample_every": 2, "eval_n": 0, "tensorboard": False,
                         "d_input_norm": True}]), run, progress=False)
    path = run / "checkpoints" / "latest.safetensors"
    # BatchNorm in the first block
    assert "D.downs.16.1.running_mean" in checkpoint.load_checkpoint(path).tensors
    save_without_config_key(path, "d_input_norm")
    train(None, run, resume=True, overrides={"steps": 4}, progress=False)
    assert checkpoint.load_checkpoint(path).config["d_input_norm"] is True  # saved from now on
    gen = load_generator(run, prefer="latest")
    assert gen.step == 4 and gen.config.d_input_norm
