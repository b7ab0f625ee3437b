"""Differentiable augmentation (ganforge.augment): each transform checked against an
independent description of what it must do, gradients reaching G, the ADA controller against
its closed form, and the loop showing D only augmented images, real and fake, in both steps."""

import json

import pytest
import torch
from torch import nn

from ganforge import augment as A
from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.train import Trainer, train

TINY = {"variant": "dcgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
        "log_every": 4, "sample_every": 8, "grid_size": 16, "eval_n": 0}


def images(n=16, c=3, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, s, s, generator=g) * 2 - 1
    x[0], x[1] = 1.0, -1.0  # the extremes of the range
    return x


@pytest.mark.parametrize("policy", ["color", "translation", "cutout",
                                    "color,translation,cutout"])
def test_outputs_keep_the_value_range(policy):
    torch.manual_seed(1)
    aug = A.Augment(A.parse_policy(policy), p=1.0)
    for c in (1, 3):
        y = aug(images(c=c))
        assert y.shape == (16, c, 32, 32)
        assert y.min() >= -1.0 and y.max() <= 1.0
        # and it did something: without the clamp brightness alone would leave the range
        assert not torch.equal(y, images(c=c))


def test_translation_is_a_shift_with_zero_fill():
    """Every output image is its input shifted by some (dy, dx) with |d| <= size/8 and zeros
    where nothing was shifted in: found by trying every shift (independent of the code)."""
    torch.manual_seed(2)
    x = images(n=12, s=24)
    y = A.translation(x)
    s = 3  # 24 / 8
    shifts = set()
    for n in range(len(x)):
        found = None
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                ref = torch.zeros_like(x[n])
                src = x[n][:, max(0, -dy):24 - max(0, dy), max(0, -dx):24 - max(0, dx)]
                ref[:, max(0, dy):24 - max(0, -dy), max(0, dx):24 - max(0, -dx)] = src
                if torch.equal(ref, y[n]):
                    found = (dy, dx)
        assert found is not None, f"image {n} is not a zero-filled shift of its input"
        shifts.add(found)
    assert len(shifts) > 3  # each image draws its own shift


def test_cutout_zeroes_one_square_of_half_the_size_and_passes_gradients():
    torch.manual_seed(3)
    x = images(n=64, s=16).requires_grad_(True)
    y = A.cutout(x)
    y.sum().backward()
    grad = x.grad
    assert set(grad.unique().tolist()) <= {0.0, 1.0}
    for n in range(64):
        zero = grad[n, 0] == 0  # [H, W]: the cut square (the same on every channel)
        assert torch.equal(zero, (grad[n] == 0).all(0))
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) <= 8 and len(cols) <= 8  # half of 16
        # a solid rectangle (clipped at the border), nothing outside it
        assert zero.sum() == len(rows) * len(cols)
        assert torch.equal(y[n][:, zero], torch.zeros_like(y[n][:, zero]))
    full = sum(int((grad[n, 0] == 0).sum() == 64) for n in range(64))
    assert full > 5  # squares entirely inside the image are 8 x 8


def test_gradients_flow_through_the_augmented_D_to_G():
    torch.manual_seed(4)
    G = nn.Sequential(nn.Linear(8, 3 * 16 * 16), nn.Tanh(), nn.Unflatten(1, (3, 16, 16)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1))
    aug = A.Augment(A.parse_policy("color,translation,cutout"), p=1.0)
    loss = -A.AugmentedD(D, aug)(G(torch.randn(4, 8))).mean()
    loss.backward()
    g = G[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # the same G step without augmentation gets another gradient: the transforms are in it
    G.zero_grad()
    torch.manual_seed(4)
    (-D(G(torch.randn(4, 8))).mean()).backward()
    assert not torch.allclose(G[0].weight.grad, g)


def test_probability_zero_is_the_identity_and_one_changes_every_image():
    x = images()
    assert torch.equal(A.Augment(["translation", "cutout", "color"], p=0.0)(x), x)
    torch.manual_seed(5)
    y = A.Augment(["color"], p=1.0)(x)
    # (images 0 and 1 are constant +1 / -1: a brightness shift past the end is clamped away)
    assert all(not torch.equal(y[n], x[n]) for n in range(2, len(x)))
    torch.manual_seed(5)
    half = A.Augment(["color"], p=0.5)(images(n=400, s=4))
    same = sum(torch.equal(a, b) for a, b in zip(half, images(n=400, s=4), strict=True))
    assert 140 < same < 260  # about half of 400 kept as they are


def test_ada_controller_follows_its_closed_form():
    """p moves by interval * batch / (kimg * 1000) per adjustment, up while r_t > target,
    down while below, clamped to [0, 1]; r_t = 2 * accuracy on real - 1."""
    aug = A.Augment(["color"], p=None, target=0.6, kimg=0.64, interval=4)
    step = 4 * 16 / 640  # 0.1
    for k in range(1, 4):
        for _ in range(4):
            aug.observe(torch.tensor(0.95))  # r_t = 0.9 > 0.6
        aug.adjust(16)
        assert aug.r_t.item() == pytest.approx(0.9)
        assert aug.p.item() == pytest.approx(k * step)
    for _ in range(4):
        aug.observe(torch.tensor(0.5))  # r_t = 0 < 0.6
    aug.adjust(16)
    assert aug.p.item() == pytest.approx(2 * step)
    for _ in range(30):
        aug.observe(torch.tensor(1.0))
        aug.adjust(16)
    assert aug.p.item() == 1.0
    fixed = A.Augment(["color"], p=0.3)
    fixed.observe(torch.tensor(1.0))
    fixed.adjust(16)
    assert fixed.p.item() == pytest.approx(0.3) and fixed.r_t.item() == 1.0


def test_bad_policies_are_one_clear_error():
    with pytest.raises(GanforgeError, match="unknown augmentation 'flip'"):
        build_config([{"augment": "color,flip"}])
    with pytest.raises(GanforgeError, match="augment_p"):
        build_config([{"augment": "color", "augment_p": "sometimes"}])
    with pytest.raises(GanforgeError, match="translates images"):
        cfg = build_config([{"variant": "pix2pix", "augment": "color"}])
        from ganforge.variants import get_variant
        get_variant("pix2pix").check(cfg)


def test_the_loop_shows_D_only_augmented_images_real_and_fake_in_both_steps(fmnist_dir,
                                                                            tmp_path):
    """With cutout at p = 1 every image D receives, in the D step (real and fake) and in the
    G step, holds a solid square of zeros half the image's size (28 px -> 14)."""
    cfg = build_config([{**TINY, "data": str(fmnist_dir), "steps": 2,
                         "augment": "cutout", "augment_p": "1", "reuse_fakes": False}])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    seen: list[tuple[str, torch.Tensor]] = []
    phase = {"now": "d"}
    trainer.D.register_forward_pre_hook(
        lambda m, args: seen.append((phase["now"], args[0].detach().clone())))
    trainer.d_step(trainer.real_batch())
    phase["now"] = "g"
    trainer.g_step()
    assert {p for p, _ in seen} == {"d", "g"}
    assert sum(len(x) for p, x in seen if p == "d") == 32  # 16 real + 16 fake
    for _, batch in seen:
        for img in batch:
            zero = (img == 0).all(0).float()[None, None]
            # some 7x7 window is all zeros (a cut square clipped at a border is >= 7 wide)
            assert nn.functional.max_pool2d(
                -nn.functional.max_pool2d(-zero, 7, 1), 1).max() == 1.0


def test_resume_with_adaptive_augmentation_is_bit_identical(fmnist_dir, tmp_path):
    kw = {**TINY, "data": str(fmnist_dir), "augment": "color,translation,cutout",
          "augment_p": "auto", "augment_kimg": 0.2}
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(build_config([{**kw, "steps": 16}]), straight, progress=False)
    train(build_config([{**kw, "steps": 8}]), split, progress=False)
    train(None, split, resume=True, overrides={"steps": 16}, progress=False)
    ca, cb = (checkpoint.load_checkpoint(r / "checkpoints" / "latest.safetensors")
              for r in (straight, split))
    for prefix in ("G", "D", "augment"):
        a, b = ca.module_state(prefix), cb.module_state(prefix)
        assert a.keys() == b.keys() and a
        for k in a:
            assert torch.equal(a[k], b[k]), f"{prefix}.{k} differs after resume"
    assert 0.0 < ca.module_state("augment")["p"].item() < 1.0  # p moved, and stayed in range
    logs = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
            for r in (straight, split)]
    assert [r.get("augment_p") for r in logs[0] if r["kind"] == "train"] == \
        [r.get("augment_p") for r in logs[1] if r["kind"] == "train"]
    assert all("r_t" in r for r in logs[0] if r["kind"] == "train")
