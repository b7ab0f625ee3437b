"""The training, resume, fp16, bf16, channels_last, evaluation and serve paths on a CUDA GPU
(compile=true is measured by `bench/bench_gpu.py step`, which bench/gpu_check.sh runs next).

Marked `gpu`: not in the default suite; `pytest -m gpu` (bench/gpu_check.sh) runs them, and
they skip where no GPU is present. tests/test_gpu_paths.py checks the same logic on the CPU.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = {"variant": "dcgan", "g_width": 16, "d_width": 16, "z_dim": 16, "batch_size": 32,
        "log_every": 3, "sample_every": 6, "grid_size": 16, "eval_n": 0, "tensorboard": False,
        "device": "cuda"}


def cfg_for(data_dir, **kw):
    return build_config([{"data": str(data_dir), **TINY, **kw}])


def final(run):
    return checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")


def max_diff(a, b, prefixes=("G", "D")) -> float:
    worst = 0.0
    for prefix in prefixes:
        sa, sb = a.module_state(prefix), b.module_state(prefix)
        assert sa.keys() == sb.keys()
        for k in sa:
            if sa[k].is_floating_point():
                worst = max(worst, (sa[k] - sb[k]).abs().max().item())
            else:
                assert torch.equal(sa[k], sb[k])
    return worst


@pytest.mark.parametrize("extra", [{}, {"amp": "bf16", "channels_last": True},
                                   {"amp": "fp16"}, {"variant": "wgan-gp", "amp": "fp16"}],
                         ids=["fp32", "bf16-channels_last", "fp16", "wgan-gp-fp16"])
def test_resume_on_cuda_is_as_exact_as_the_gpu_is_deterministic(fmnist_dir, tmp_path, extra):
    """Split-and-resume ends where a straight run ends: bit-identical when two straight runs
    are (cuDNN picked deterministic kernels), else as close as two straight runs are."""
    train(cfg_for(fmnist_dir, steps=12, **extra), tmp_path / "a", progress=False)
    train(cfg_for(fmnist_dir, steps=12, **extra), tmp_path / "b", progress=False)
    train(cfg_for(fmnist_dir, steps=6, **extra), tmp_path / "split", progress=False)
    train(None, tmp_path / "split", resume=True, overrides={"steps": 12}, progress=False)
    a, b, split = final(tmp_path / "a"), final(tmp_path / "b"), final(tmp_path / "split")
    noise = max_diff(a, b)
    assert max_diff(a, split) <= max(noise * 10, 0.0)
    if extra.get("amp") == "fp16":
        assert split.meta["state"]["scaler"] == a.meta["state"]["scaler"]
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().split("\n")
               if x]
    assert not [r for r in records if r["kind"] == "health"]
    assert all(np.isfinite(r["loss_D"]) for r in records if r["kind"] == "train")


def test_resume_across_devices(fmnist_dir, tmp_path):
    """cuda -> cpu -> cuda: the saved run state has no device-specific generator state."""
    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, steps=4), run, progress=False)
    train(None, run, resume=True, overrides={"steps": 8, "device": "cpu"}, progress=False)
    train(None, run, resume=True, overrides={"steps": 12, "device": "cuda:0"}, progress=False)
    assert final(run).step == 12


def test_fp16_overflow_is_skipped_not_rolled_back(fmnist_dir, tmp_path):
    from test_gpu_paths import overflow_d_once

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, steps=9, amp="fp16", on_problem="stop"), run, progress=False,
          fault_hook=overflow_d_once(4))
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("amp_skips_D", 0) for r in log) > 0
    assert not [r for r in log if r["kind"] == "health"]


def test_inception_on_cuda_matches_the_cpu(fmnist_dir):
    """IEEE float32 on the GPU gives the CPU's features up to float rounding; tf32 and bf16
    are further off; statistics in float64 on the device agree with numpy's."""
    from ganforge.data import load_dataset
    from ganforge.metrics.extract import FeatureExtractor
    from ganforge.metrics.scores import feature_stats, fid_from_stats

    images = np.asarray(load_dataset(fmnist_dir).images[:240])
    cpu = FeatureExtractor("cpu", progress=False).extract(images).features
    gpu = FeatureExtractor("cuda", progress=False).extract(images).features
    rel = np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu)
    assert rel < 1e-4, rel
    tf32 = FeatureExtractor("cuda", dtype="tf32", progress=False).extract(images).features
    assert np.linalg.norm(tf32 - cpu) / np.linalg.norm(cpu) < 1e-2
    a, b = gpu[:120], gpu[120:]
    on_gpu = fid_from_stats(*feature_stats(a, "cuda"), *feature_stats(b, "cuda"), device="cuda")
    # float64 statistics, but cuSOLVER's eigenvalues and the matrix square root differ from
    # numpy/scipy's in the last digits
    assert on_gpu == pytest.approx(fid_from_stats(*feature_stats(a), *feature_stats(b)),
                                   rel=1e-5)
    # independent of the batching on the GPU: the network always sees chunks of 200 (the last
    # zero-padded), so batches of 37 (each padded; a batch_size below 200 is raised to it) give
    # the features of the default 200 + 40 bit for bit
    odd = (images[i:i + 37] for i in range(0, len(images), 37))
    again = FeatureExtractor("cuda", progress=False).extract(odd, n=len(images)).features
    np.testing.assert_array_equal(again, gpu)


def test_training_evaluation_and_sampling_on_cuda(fmnist_dir, tmp_path):
    from ganforge.cli import main

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, steps=6, eval_n=64, eval_every=6, ema=0.9), run, progress=False)
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (ev,) = [r for r in log if r["kind"] == "eval"]
    assert np.isfinite(ev["fid"]) and ev["n_fake"] == 64
    # `auto` picks the GPU; the CPU gives the same images (the same latents, drawn on the
    # CPU) up to float rounding (cuDNN's TF32 convolutions at most): a few levels of 255
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "g")]) == 0
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "c"),
                 "--device", "cpu"]) == 0
    g, c = (sorted((tmp_path / d).glob("*.png")) for d in ("g", "c"))
    assert len(g) == 8 and [p.name for p in g] == [p.name for p in c]
    diff = np.abs(np.stack([np.asarray(Image.open(p), np.int16) for p in g])
                  - np.stack([np.asarray(Image.open(p), np.int16) for p in c]))
    assert diff.max() <= 8 and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_successive_latent_draws_on_cuda_differ():
    from ganforge.runstate import NoiseStream

    stream = NoiseStream(5, torch.device("cuda"))
    draws = [torch.randn(64, 16, device="cuda", generator=stream.next()) for _ in range(4)]
    for i in range(len(draws)):
        for j in range(i):
            assert not torch.equal(draws[i], draws[j]), (i, j)
    again = NoiseStream(5, torch.device("cuda"))  # the same stream again: the same draws
    assert torch.equal(torch.randn(64, 16, device="cuda", generator=again.next()), draws[0])


def test_serve_on_cuda(fmnist_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ganforge.serve import create_app

    run = tmp_path / "run"
    train(cfg_for(fmnist_dir, steps=3), run, progress=False)
    with TestClient(create_app(run, "cuda", threads=1)) as client:
        z = client.get("/api/latent", params={"seed": 5}).json()["z"]
        r = client.post("/api/image", json={"z": z})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
