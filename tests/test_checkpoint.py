"""Checkpoints: round trip, hostile files, and no unpickling."""

import numpy as np
import pytest
import torch

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator
from ganforge.train import train


@pytest.fixture(scope="module")
def run(fmnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("ckrun")
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "g_width": 8,
                         "d_width": 8, "z_dim": 16, "batch_size": 16, "steps": 5}])
    train(cfg, run, progress=False)
    return run


def test_round_trip_gives_identical_outputs(run, tmp_path):
    ckpt = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    gen = load_generator(run)
    z = gen.latents(8, seed=1)
    out1 = gen.generate(z)
    # save the same modules again and reload: same bytes of images
    checkpoint.save_checkpoint(tmp_path / "again.safetensors", config=ckpt.config,
                               step=ckpt.step, modules={"G": gen.G}, optimizers={},
                               tensors={}, state=ckpt.meta["state"])
    out2 = load_generator(tmp_path / "again.safetensors", use_ema=False).generate(z)
    np.testing.assert_array_equal(out1, out2)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "text", "other_variant"])
def test_hostile_checkpoints_are_refused(run, tmp_path, damage):
    src = (run / "checkpoints" / "latest.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    if damage == "truncate":
        bad.write_bytes(src[: len(src) // 2])
    elif damage == "flip":
        b = bytearray(src)
        b[-100] ^= 0xFF
        bad.write_bytes(bytes(b))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("not a checkpoint at all")
    if damage == "other_variant":
        ckpt = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
        cfg = dict(ckpt.config, variant="mlp")
        checkpoint.save_checkpoint(bad, config=cfg, step=1, modules={}, optimizers={},
                                   tensors=ckpt.tensors, state=ckpt.meta["state"])
        with pytest.raises(GanforgeError, match="does not match"):
            load_generator(bad)
        return
    with pytest.raises(GanforgeError) as e:
        checkpoint.load_checkpoint(bad)
    assert str(bad) in str(e.value)


def test_checkpoint_holds_only_tensors_and_json(run):
    from safetensors.torch import load_file

    tensors = load_file(run / "checkpoints" / "latest.safetensors")
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert any(k.startswith("opt_D.") for k in tensors)
