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
