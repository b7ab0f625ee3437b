"""Guard rails for small data sets: the pixel-space memorisation distance and the
augmentation-leak check, on real images, and their place in the training log."""

import json

import numpy as np
import pytest
import torch

from ganforge import augment as A
from ganforge import data
from ganforge.config import build_config
from ganforge.metrics.memorization import PixelMemorization
from ganforge.train import train


@pytest.fixture(scope="module")
def fmnist_test() -> np.ndarray:
    img_path, _ = data.fashion_mnist_files("test")
    return data.read_idx(img_path)[:800, :, :, None]  # uint8 [800, 28, 28, 1]


def brute_force_nn_rms(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The definition, one pair at a time: RMS difference of [0, 1] pixels to the nearest."""
    q = query.reshape(len(query), -1).astype(np.float64) / 255
    r = ref.reshape(len(ref), -1).astype(np.float64) / 255
    return np.array([min(np.sqrt(np.mean((a - b) ** 2)) for b in r) for a in q])


def test_memorisation_distance_matches_its_definition(fmnist_test):
    train, fake = fmnist_test[:60], fmnist_test[700:710]
    mem = PixelMemorization(train)  # 28 px <= 32: no pooling
    np.testing.assert_allclose(mem.distances(fake).numpy(), brute_force_nn_rms(fake, train),
                               rtol=1e-9)
    loo = [brute_force_nn_rms(train[i:i + 1], np.delete(train, i, axis=0))[0]
           for i in range(60)]
    assert mem.real_median == pytest.approx(np.median(loo), rel=1e-9)


def test_copies_score_near_zero_and_new_images_near_one(fmnist_test):
    train, held_out = fmnist_test[:500], fmnist_test[500:800]
    mem = PixelMemorization(train)
    copies = mem(train[:300])
    assert copies["nn_dist"] < 1e-6 and copies["nn_ratio"] < 1e-5
    rng = np.random.default_rng(0)
    near = np.clip(train[:300].astype(int) + rng.integers(-8, 9, train[:300].shape), 0, 255)
    assert mem(near.astype(np.uint8))["nn_ratio"] < 0.5  # lightly noised copies
    fresh = mem(held_out)  # real images it has never seen
    assert 0.7 < fresh["nn_ratio"] < 1.4


def augmented(images: np.ndarray, policy: str) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.manual_seed(0)
    y = A.Augment(A.parse_policy(policy), p=1.0)(x)
    return ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_leak_check_names_the_transform_whose_artifacts_show(fmnist_test):
    real = np.repeat(fmnist_test[:300], 3, axis=-1)  # RGB
    assert A.leak_check(augmented(real, "translation"), real)["leaks"] == ["translation"]
    assert A.leak_check(augmented(real, "cutout"), real)["leaks"] == ["cutout"]
    assert A.leak_check(augmented(real, "color"), real)["leaks"] == []
    assert A.leak_check(real[:150], real[150:])["leaks"] == []
    # an untrained G's flat gray images are not augmentation artifacts
    assert A.leak_check(np.full((50, 28, 28, 3), 128, np.uint8), real)["leaks"] == []


def test_quick_evaluations_log_memorisation_and_leak_figures(color_folder, tmp_path):
    run = tmp_path / "run"
    cfg = build_config([{"data": str(color_folder), "size": 32, "variant": "dcgan",
                         "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
                         "steps": 4, "log_every": 2, "sample_every": 4, "eval_every": 4,
                         "eval_n": 20, "augment": "translation,cutout"}])
    train(cfg, run, progress=False)
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert len(evals) == 1
    e = evals[0]
    assert e["nn_dist"] > 0 and e["nn_ratio"] > 0
    assert {"leak_border_fake", "leak_border_real", "leak_cutout_fake", "leak_cutout_real",
            "leaks"} <= set(e)


def test_larger_sets_get_the_leak_check_only_when_augmenting(color_folder, tmp_path,
                                                             monkeypatch):
    """Above SMALL_DATA images no memorisation distance, but an augmenting run (the recipe
    augments up to 20,000 images) still checks for leaks; an unaugmented one gets neither."""
    import ganforge.train as T

    monkeypatch.setattr(T, "SMALL_DATA", 10)  # the folder's 96 images count as large
    figures = {}
    for name, aug in (("aug", "translation,cutout"), ("plain", "")):
        cfg = build_config([{"data": str(color_folder), "size": 32, "variant": "dcgan",
                             "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
                             "steps": 2, "log_every": 2, "sample_every": 2, "eval_every": 2,
                             "eval_n": 20, "augment": aug}])
        train(cfg, tmp_path / name, progress=False)
        (e,) = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text()
                .splitlines() if '"eval"' in x]
        figures[name] = set(e)
    assert "leaks" in figures["aug"] and "nn_ratio" not in figures["aug"]
    assert not {"leaks", "nn_ratio"} & figures["plain"]
