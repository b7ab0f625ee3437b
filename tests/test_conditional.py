"""Class-conditional GAN (cgan) on real labelled data: labelled-folder preparation and its
errors, training with one grid row per class, exact resume, and `sample --class`."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
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


def test_within_class_diversity_is_one_for_real_images_and_zero_for_copies():
    from ganforge.evaluate_cond import within_class_diversity

    img, lbl = data.fashion_mnist_files("test")
    x, y = data.read_idx(img)[:2000, :, :, None], data.read_idx(lbl)[:2000].astype(np.int64)
    real = [x[y == c][:50] for c in range(10)]
    copies = [np.repeat(x[y == c][:1], 50, axis=0) for c in range(10)]
    other = [x[y == c][50:100] for c in range(10)]  # different real images of the class
    assert np.allclose(within_class_diversity(real, x, y), 1.0)
    assert np.allclose(within_class_diversity(copies, x, y), 0.0, atol=0.01)
    assert all(0.7 < d < 1.4 for d in within_class_diversity(other, x, y))


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


def test_a_cgan_checkpoint_from_before_conditional_batchnorm_still_samples(fmnist_dir, tmp_path):
    from safetensors.torch import save as st_save

    run = tmp_path / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 2, "sample_every": 2,
                         "cond_norm": False}]), run, progress=False)
    path = run / "checkpoints" / "latest.safetensors"
    before = write_samples(load_generator(path), 3, None, class_="Bag")
    # rewrite its config as the older release wrote it: no cond_norm key
    ck = checkpoint.load_checkpoint(path)
    meta = checkpoint._read_header(path, path.read_bytes())
    del meta["config"]["cond_norm"]
    meta["header_sha256"] = checkpoint._header_digest(meta)
    path.write_bytes(st_save(ck.tensors, metadata={"ganforge": json.dumps(meta)}))
    gen = load_generator(path)
    assert not gen.config.cond_norm
    np.testing.assert_array_equal(write_samples(gen, 3, None, class_="Bag"), before)
