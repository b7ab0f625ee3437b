"""Class-conditional GAN (cgan) on real labelled data: labelled-folder preparation and its
errors, training with one grid row per class, exact resume, and `sample --class`."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, save_without_config_key
from PIL import Image

from ganforge import checkpoint, data, data_cond
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator, write_samples
from ganforge.train import train

TINY = {"variant": "cgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
        "log_every": 5, "sample_every": 10, "grid_size": 20, "threads": 1}
NAMES = {0: "tshirt", 5: "sandal", 8: "bag"}


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory):
    """Three class folders of real Fashion-MNIST items (40 each), plus a stray root file."""
    img, lbl = data.fashion_mnist_files("test")
    x, y = data.read_idx(img)[:1000], data.read_idx(lbl)[:1000]
    root = tmp_path_factory.mktemp("labelled")
    for k, name in NAMES.items():
        (root / name).mkdir()
        for i, im in enumerate(x[y == k][:40]):
            Image.fromarray(im).save(root / name / f"{i:02d}.png")
    Image.fromarray(x[0]).save(root / "stray.png")
    return root


def test_labelled_folder_prepares_with_class_names(labelled_folder, tmp_path):
    ds = data_cond.prepare_labelled(labelled_folder, tmp_path / "p", size=28, progress=False)
    assert ds.meta["classes"] == ["bag", "sandal", "tshirt"]
    assert len(ds) == 120 and ds.channels == 1 and ds.size == 28
    assert np.bincount(ds.labels).tolist() == [40, 40, 40]
    assert [s["reason"] for s in ds.meta["skipped"]] == ["not inside a class folder"]


def test_labelled_prepare_honours_limit_and_per_folder(labelled_folder, tmp_path):
    ds = data_cond.prepare_labelled(labelled_folder, tmp_path / "k", size=28, per_folder=5,
                                    progress=False)
    assert np.bincount(ds.labels).tolist() == [5, 5, 5] and ds.meta["per_folder"] == 5
    # the limit is shared out across the classes, not taken from the first ones
    ds = data_cond.prepare_labelled(labelled_folder, tmp_path / "n", size=28, limit=10,
                                    progress=False)
    assert np.bincount(ds.labels).tolist() == [4, 3, 3] and ds.meta["limit"] == 10
    with pytest.raises(GanforgeError, match="--limit 2 is less than the number of classes"):
        data_cond.prepare_labelled(labelled_folder, tmp_path / "x", limit=2, progress=False)
    # per folder: each folder inside a class folder too (e.g. one per person)
    nested = tmp_path / "nested"
    for cls, people in (("cats", ("a", "b")), ("dogs", ("c",))):
        for person in people:
            (nested / cls / person).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(
                    nested / cls / person / f"{i}.png")
    ds = data_cond.prepare_labelled(nested, tmp_path / "pp", size=8, per_folder=3,
                                    progress=False)
    assert np.bincount(ds.labels).tolist() == [6, 3]
    r = run_cli("prepare", str(labelled_folder), "--labelled", "--out", str(tmp_path / "cli"),
                "--size", "28", "--limit", "7", "--per-folder", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert np.bincount(data.load_dataset(tmp_path / "cli").labels).tolist() == [2, 2, 2]


def test_labelled_folder_errors(labelled_folder, tmp_path):
    bad = tmp_path / "bad"
    (bad / "shoes").mkdir(parents=True)
    (bad / "empty").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(bad / "shoes" / "a.png")
    with pytest.raises(GanforgeError, match="class folder.*no images.*empty"):
        data_cond.prepare_labelled(bad, tmp_path / "out", progress=False)
    (bad / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GanforgeError, match="class 'empty' could be used"):
        data_cond.prepare_labelled(bad, tmp_path / "out", progress=False)
    with pytest.raises(GanforgeError, match="needs one sub-folder per class"):
        data_cond.resolve_labelled(str(labelled_folder / "bag"), progress=False)
    data.prepare(str(labelled_folder / "bag"), tmp_path / "unlabelled", size=28, progress=False)
    with pytest.raises(GanforgeError, match="no class labels"):
        data_cond.resolve_labelled(str(tmp_path / "unlabelled"), progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_cgan_trains_resumes_exactly_and_grids_have_a_row_per_class(fmnist_dir, tmp_path):
    cfg = build_config([{**TINY, "data": str(fmnist_dir), "steps": 20}])
    train(cfg, tmp_path / "straight", progress=False)
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 10}]), tmp_path / "split",
          progress=False)
    train(None, tmp_path / "split", resume=True, overrides={"steps": 20}, progress=False)
    a = checkpoint.load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.safetensors")
    b = checkpoint.load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.safetensors")
    for prefix in ("G", "D"):
        for k, t in a.module_state(prefix).items():
            assert torch.equal(t, b.module_state(prefix)[k]), f"{prefix}.{k} differs"
    assert a.meta["state"]["classes"] == data.FASHION_MNIST_CLASSES
    assert a.meta["state"]["kind"] == "conditional"
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    log = [json.loads(x) for x in lines]
    assert all(np.isfinite(r["loss_D"]) and np.isfinite(r["loss_G"]) for r in log)
    grid = np.asarray(Image.open(tmp_path / "straight" / "samples" / "step-000020.png"))
    # 10 classes x 2 columns of 28 px (+2 px padding), upscaled x2
    assert grid.shape[:2] == (2 * (10 * 30 + 2), 2 * (2 * 30 + 2))


def test_within_class_diversity_against_other_real_images_of_the_class():
    """Generated images are compared with *other* real images of their own class: a class
    drawn as those real images pulled halfway to their mean is half as diverse (the 16x16
    pooling and the distances are linear), one image repeated is not diverse at all, and a
    set of another class's images is not judged against itself."""
    from ganforge.evaluate_cond import within_class_diversity
    from ganforge.health import diversity

    img, lbl = data.fashion_mnist_files("test")
    x, y = data.read_idx(img)[:3000, :, :, None], data.read_idx(lbl)[:3000].astype(np.int64)
    ref_x, ref_y = x[:1000], y[:1000]  # the held-out real images
    base = [x[1000:][y[1000:] == c][:40] for c in range(3)]  # generated: other real images
    halfway = base[0].mean(0) + 0.5 * (base[0] - base[0].mean(0))
    fakes = [np.round(halfway).astype(np.uint8), np.repeat(base[1][:1], 40, axis=0), base[1]]

    def div(images):
        return diversity(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)

    got = within_class_diversity(fakes, ref_x, ref_y)
    real = [div(ref_x[ref_y == c][:40]) for c in range(3)]
    assert got[0] == pytest.approx(0.5 * div(base[0]) / real[0], rel=0.02)
    assert got[1] == pytest.approx(0.0, abs=0.01)  # float32 distances of equal images
    # class 2 drawn as class-1 images: their diversity over class 2's real diversity
    assert got[2] == pytest.approx(div(base[1]) / real[2], rel=1e-6)
    assert abs(got[2] - 1) > 0.05 and abs(got[0] - 0.5) < 0.25


class _PixelFeatures:
    """Stands in for the Inception network: every 13th pixel as the features (the per-class
    FID's bookkeeping is what is checked here; the network has tests of its own)."""

    dtype, has_logits, batch_size, device = "pixels", False, 50, "cpu"

    def __init__(self, *args, **kwargs):
        pass

    @staticmethod
    def of(images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, ::13]

    def extract(self, images, n=None, desc=""):
        from ganforge.metrics.extract import Features

        return Features(self.of(images[:n] if n else images))


def test_evaluate_conditional_of_a_generator_that_draws_real_images(labelled_folder, tmp_path,
                                                                    monkeypatch):
    """A stand-in generator whose class-k images are real training images of class k: the
    classifier accuracy on them is the classifier's accuracy on those images (checked with the
    cached classifier), one drawing the wrong class scores 0 there, and the per-class FID is
    the FID of each class's images against the held-out real images of that class."""
    from types import SimpleNamespace

    from ganforge import metrics
    from ganforge.classifier import cached_classifier, predict
    from ganforge.evaluate_cond import evaluate_conditional

    ds = data_cond.prepare_labelled(labelled_folder, tmp_path / "lab", size=28, progress=False)
    x, y = np.asarray(ds.images), np.asarray(ds.labels)
    order = np.random.default_rng(0).permutation(len(x))  # the 90/10 split it makes
    tr, te = np.sort(order[:108]), np.sort(order[108:])
    per_class = [x[tr][y[tr] == k][:4] for k in range(3)]
    drawn = {0: per_class[0], 1: per_class[1], 2: per_class[0]}  # class 2 draws class 0

    gen = SimpleNamespace(
        config=SimpleNamespace(data=str(ds.path)), classes=ds.meta["classes"], size=28,
        channels=1, latents=lambda n, seed: torch.zeros(n, 2),
        generate=lambda z, truncation, c: drawn[int(c[0])][:len(z)])
    monkeypatch.setattr(metrics, "FeatureExtractor", _PixelFeatures)
    res = evaluate_conditional(gen, n_per_class=4, progress=False)
    clf, info = cached_classifier(f"{ds.key}-90pct", x[tr], y[tr], 3, progress=False)
    assert info["cached"]
    acc = [float((predict(clf, drawn[k]) == k).mean()) for k in range(3)]
    assert res["acc_generated_per_class"] == pytest.approx(acc)
    assert acc[2] == 0.0 and res["acc_generated"] == pytest.approx(np.mean(acc))
    assert res["acc_real"] == pytest.approx(float((predict(clf, x[te]) == y[te]).mean()))
    assert res["n_real_test"] == 12 and res["real_split"] == "heldout10pct"
    for k in range(3):
        real_k = x[te][y[te] == k][:4]
        assert res["fid_real_per_class"][k] == len(real_k) >= 2
        expected = metrics.fid(_PixelFeatures.of(drawn[k]), _PixelFeatures.of(real_k))
        assert res["fid_per_class"][k] == pytest.approx(expected, rel=1e-9)
    assert res["fid_class_mean"] == pytest.approx(np.mean(res["fid_per_class"]))


def test_cgan_generator_uses_z_and_the_condition_sets_its_batchnorms(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 10, "mode_seeking": 0.1}]),
          run, progress=False)
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["mode_seeking_ratio"]) for r in log if r["kind"] == "train")
    G = load_generator(run).G
    assert G.cond_norm and len(G.norms) == 2  # 28 px: 7 -> 14 -> 28, one norm per hidden layer
    h = G.condition(torch.tensor([0, 7]))
    gains = G.norms[0].gain(h)
    assert not torch.allclose(gains[0], gains[1])  # the class sets the scale...
    with torch.no_grad():
        z = torch.randn(8, 16)
        same_c = G(z, torch.full((8,), 7))
    assert (same_c - same_c.mean(0)).abs().mean() > 1e-3  # ...and z still moves the image


def test_sample_class_is_deterministic_and_differs_between_classes(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 10}]), run, progress=False)
    gen = load_generator(run)
    assert gen.kind == "conditional" and gen.classes[7] == "Sneaker"
    a = write_samples(gen, 4, None, seed=1, class_="Sneaker")
    b = write_samples(load_generator(run), 4, None, seed=1, class_="7")
    c = write_samples(gen, 4, None, seed=1, class_="Bag")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(GanforgeError, match="unknown class 'Hat'.*7=Sneaker"):
        gen.class_index("Hat")
    r = run_cli("sample", str(run), "--class", "sandal", "--n", "3", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "of class 'Sandal'" in r.stdout
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        f"sample-0000{i}.png" for i in range(3)]
    r = run_cli("sample", str(run), "--n", "20", "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 0 and "one row per class (10)" in r.stdout
    assert np.asarray(Image.open(tmp_path / "g.png")).shape[:2] == (10 * 30 + 2, 2 * 30 + 2)
    r = run_cli("sample", str(run), "--class", "Hat", "--grid", str(tmp_path / "h.png"))
    assert r.returncode == 2 and "unknown class 'Hat'" in r.stderr


def test_cli_trains_cgan_on_a_labelled_folder(labelled_folder, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--variant", "cgan", "--data", str(labelled_folder), "--size", "28",
                "--steps", "4", "--set", "g_width=8", "--set", "d_width=8",
                "--set", "batch_size=8", "--set", "sample_every=4", "--set", "threads=1",
                "--set", "loss=bce", "--set", "d_norm=batch", "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    gen = load_generator(run)
    assert gen.classes == ["bag", "sandal", "tshirt"] and gen.config.loss == "bce"
    assert write_samples(gen, 2, None, class_="bag").shape == (2, 28, 28, 1)


def test_explorer_serves_classes_and_a_class_per_image(fmnist_dir, tmp_path):
    from fastapi.testclient import TestClient

    from ganforge.serve import create_app

    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 5, "sample_every": 5}]), run,
          progress=False)
    with TestClient(create_app(run, threads=1, microbatch=False)) as client:
        info = client.get("/api/info").json()
        assert info["kind"] == "conditional" and info["classes"] == data.FASHION_MNIST_CLASSES
        z = client.get("/api/latent", params={"seed": 3}).json()["z"]
        pngs = {c: client.post("/api/image", json={"z": z, "c": c}) for c in (0, 7, 7)}
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/png"
                   for r in pngs.values())
        again = client.post("/api/image", json={"z": z, "c": 7}).content
        assert again == pngs[7].content and pngs[0].content != pngs[7].content
        bad = client.post("/api/image", json={"z": z, "c": 10})
        assert bad.status_code == 422 and "c" in bad.text
        grid = client.get("/api/grid", params={"seeds": "0-3", "c": 5})
        assert grid.status_code == 200
        gif = client.post("/api/interpolate", json={"a": 0, "b": 1, "frames": 3, "c": 2})
        assert gif.status_code == 200 and gif.content[:3] == b"GIF"


def test_evaluate_detects_a_conditional_model_and_caches_its_classifier(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 5, "sample_every": 5}]), run,
          progress=False)
    args = ("evaluate", str(run), "--n-per-class", "4", "--no-fid", "--json", "--no-progress")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    assert a["kind"] == "conditional" and a["real_split"] == "heldout10pct"
    assert a["n_real_test"] == 30 and not a["classifier"]["cached"]
    assert 0 <= a["acc_generated"] <= 1 and 0 <= a["acc_real"] <= 1
    assert len(a["acc_generated_per_class"]) == 10
    b = json.loads(run_cli(*args).stdout)
    assert b["classifier"]["cached"] and b["acc_real"] == a["acc_real"]
    assert b["acc_generated"] == a["acc_generated"]
    assert len((run / "evaluations.jsonl").read_text().splitlines()) == 2


def test_a_cgan_checkpoint_from_before_conditional_batchnorm_samples_and_resumes(fmnist_dir,
                                                                                  tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 2, "sample_every": 2,
                         "cond_norm": False}]), run, progress=False)
    path = run / "checkpoints" / "latest.safetensors"
    before = write_samples(load_generator(path), 3, None, class_="Bag")
    save_without_config_key(path, "cond_norm")  # as the older release wrote it
    gen = load_generator(path)
    assert not gen.config.cond_norm
    np.testing.assert_array_equal(write_samples(gen, 3, None, class_="Bag"), before)
    # and it resumes with the layout it was saved with (config.LEGACY)
    train(None, run, resume=True, overrides={"steps": 4}, progress=False)
    assert checkpoint.load_checkpoint(path).config["cond_norm"] is False
