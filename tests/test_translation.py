"""Image-to-image translation on real data: paired/side-by-side preparation and its errors,
pix2pix's L1 falling, CycleGAN's cycle loss falling and exact resume (history pool
included), and `ganforge translate` in both directions."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from ganforge import checkpoint, data, data_cond
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.train import train

TINY = {"g_width": 8, "d_width": 8, "batch_size": 8, "log_every": 5, "sample_every": 10,
        "grid_size": 4, "threads": 1}


@pytest.fixture(scope="session")
def edges_dir(tmp_path_factory):
    """200 pairs: Sobel edge map of a real Fashion-MNIST test item -> the item."""
    out = tmp_path_factory.mktemp("edges")
    data_cond.prepare_paired("fashion-mnist-edges:test", out, limit=200, progress=False)
    return out


@pytest.fixture(scope="session")
def shoes(tmp_path_factory):
    """Two unpaired real folders: 60 sandals (A) and 60 sneakers (B), 28x28 gray PNGs."""
    img, lbl = data.fashion_mnist_files("test")
    x, y = data.read_idx(img)[:2000], data.read_idx(lbl)[:2000]
    root = tmp_path_factory.mktemp("shoes")
    for k, name in ((5, "sandal"), (7, "sneaker")):
        (root / name).mkdir()
        for i, im in enumerate(x[y == k][:60]):
            Image.fromarray(im).save(root / name / f"{i:02d}.png")
    return root


def log_of(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _scipy_edges(images: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Sobel magnitude (scipy.ndimage, replicated borders) above `threshold` x each image's
    largest magnitude: an implementation independent of data_cond.sobel_edges."""
    from scipy import ndimage

    out = []
    for im in images[..., 0].astype(np.float64):
        mag = np.hypot(ndimage.sobel(im, axis=1, mode="nearest"),
                       ndimage.sobel(im, axis=0, mode="nearest"))
        out.append((mag > threshold * max(mag.max(), 1e-6)) * 255)
    return np.asarray(out, np.uint8)[..., None]


def test_edges_pairs_are_real_items_and_their_edges(edges_dir):
    p = data_cond.load_paired(edges_dir)
    assert len(p.a) == len(p.b) == 200 and p.a.size == 28 and p.a.channels == 1
    a, b = np.asarray(p.a.images), np.asarray(p.b.images)
    assert set(np.unique(a)) <= {0, 255} and 0.02 < (a > 0).mean() < 0.5
    np.testing.assert_array_equal(b[:, :, :, 0], data.read_idx(
        data.fashion_mnist_files("test")[0])[:200])  # B: the real items
    np.testing.assert_array_equal(a, _scipy_edges(b))
    # closed form: a vertical step from 0 to 255 has its edges on the two columns beside it
    step = np.zeros((1, 8, 8, 1), np.uint8)
    step[:, :, 4:] = 255
    expected = np.zeros((1, 8, 8, 1), np.uint8)
    expected[:, :, 3:5] = 255
    np.testing.assert_array_equal(data_cond.sobel_edges(step), expected)


def test_paired_folders_report_files_without_a_partner(tmp_path):
    img, _ = data.fashion_mnist_files("test")
    x = data.read_idx(img)[:6]
    for side in ("A", "B"):
        (tmp_path / "src" / side).mkdir(parents=True)
    for i in range(5):
        Image.fromarray(255 - x[i]).save(tmp_path / "src" / "A" / f"{i}.png")
        Image.fromarray(x[i]).save(tmp_path / "src" / "B" / f"{i}.jpg" if i else
                                   tmp_path / "src" / "B" / f"{i}.png")
    Image.fromarray(x[5]).save(tmp_path / "src" / "A" / "lonely.png")
    (tmp_path / "src" / "B" / "3.jpg").write_bytes(b"broken")
    p = data_cond.prepare_paired(str(tmp_path / "src"), tmp_path / "out", size=28,
                                 progress=False)
    assert len(p.a) == 4
    reasons = {s["path"]: s["reason"] for s in p.meta["skipped"]}
    assert reasons["A/lonely.png"].startswith("no partner in B")
    assert reasons["B/3"].startswith("not an image")
    assert "no partner in B" in data_cond.describe_paired(p)
    np.testing.assert_array_equal(np.asarray(p.a.images[0]), 255 - x[0][:, :, None])

    (tmp_path / "half" / "A").mkdir(parents=True)
    with pytest.raises(GanforgeError, match="only one of the folders A and B"):
        data_cond.prepare_paired(str(tmp_path / "half"), tmp_path / "o2", progress=False)
    # a half-written cache (B replaced after pairs.json) is refused, not used
    data.prepare(str(tmp_path / "src" / "A"), tmp_path / "out" / "B", size=28, progress=False)
    with pytest.raises(GanforgeError, match="unfinished or damaged"):
        data_cond.load_paired(tmp_path / "out")


def test_side_by_side_images(tmp_path):
    img, _ = data.fashion_mnist_files("test")
    x = data.read_idx(img)[:3]
    (tmp_path / "ab").mkdir()
    for i, im in enumerate(x):
        Image.fromarray(np.concatenate([255 - im, im], axis=1)).save(tmp_path / "ab" / f"{i}.png")
    Image.fromarray(x[0]).save(tmp_path / "ab" / "square.png")
    p = data_cond.prepare_paired(str(tmp_path / "ab"), tmp_path / "out", size=28,
                                 progress=False)
    assert len(p.a) == 3
    np.testing.assert_array_equal(np.asarray(p.b.images)[..., 0], x)
    np.testing.assert_array_equal(np.asarray(p.a.images)[..., 0], 255 - x)
    assert "not a side-by-side pair" in p.meta["skipped"][0]["reason"]


def test_pix2pix_l1_falls_and_grid_shows_input_translation_target(edges_dir, tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "variant": "pix2pix", "data": str(edges_dir), "steps": 40,
                         "batch_size": 16}]), run, progress=False)
    l1 = [r["l1"] for r in log_of(run)]
    assert all(np.isfinite(l1)) and l1[-1] < 0.9 * l1[0], l1
    grid = np.asarray(Image.open(run / "samples" / "step-000040.png"))
    assert grid.shape[:2] == (2 * (3 * 30 + 2), 2 * (4 * 30 + 2))  # 3 rows x 4, upscaled x2


def test_cyclegan_cycle_loss_falls_and_resume_is_exact(shoes, tmp_path):
    common = {**TINY, "variant": "cyclegan", "data": str(shoes / "sandal"),
              "data_b": str(shoes / "sneaker"), "size": 28, "res_blocks": 2, "batch_size": 4,
              "pool_size": 6}
    train(build_config([{**common, "steps": 30}]), tmp_path / "straight", progress=False)
    cycle = [r["cycle"] for r in log_of(tmp_path / "straight")]
    assert all(np.isfinite(cycle)) and cycle[-1] < 0.8 * cycle[0], cycle

    class Killed(Exception):
        pass

    def kill_after_step_10(trainer):
        if trainer.step == 11:  # step 10's checkpoint is written; the lr schedule is the same
            raise Killed

    with pytest.raises(Killed):
        train(build_config([{**common, "steps": 30}]), tmp_path / "split", progress=False,
              fault_hook=kill_after_step_10)
    train(None, tmp_path / "split", resume=True, progress=False)
    a = checkpoint.load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.safetensors")
    b = checkpoint.load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.safetensors")
    for prefix in ("G", "D", "pool"):
        for k, t in a.module_state(prefix).items():
            assert torch.equal(t, b.module_state(prefix)[k]), f"{prefix}.{k} differs"
    assert int(a.tensors["pool.count_a"]) == 6  # full: later fakes were swapped in and out
    lr = a.meta["optimizers"]["opt_G"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(2e-4 * 1 / 15)  # linear decay over the second half
    assert [r["loss_G"] for r in log_of(tmp_path / "straight")] == \
        [r["loss_G"] for r in log_of(tmp_path / "split")]


def test_translate_cli_both_directions(shoes, edges_dir, tmp_path):
    run = tmp_path / "cyc"
    r = run_cli("train", "--variant", "cyclegan", "--data", str(shoes / "sandal"), "--data-b",
                str(shoes / "sneaker"), "--size", "28", "--steps", "2", "--set", "g_width=4",
                "--set", "d_width=4", "--set", "res_blocks=1", "--set", "threads=1",
                "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "in"
    src.mkdir()
    Image.open(next((shoes / "sandal").iterdir())).convert("RGB").resize((40, 40)).save(
        src / "big-colour.jpg")
    Image.open(next((shoes / "sneaker").iterdir())).save(src / "plain.png")
    (src / "corrupt.png").write_bytes(b"\x89PNG broken")
    for direction in ("a2b", "b2a"):
        out = tmp_path / direction
        r = run_cli("translate", str(run), "--in", str(src), "--out", str(out),
                    "--direction", direction)
        assert r.returncode == 0, r.stderr
        assert "translated 2 images" in r.stdout and "corrupt.png" in r.stdout
        for name in ("big-colour.png", "plain.png"):
            with Image.open(out / name) as im:
                assert (im.size, im.mode) == ((28, 28), "L")
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a2b" / "plain.png")),
                              np.asarray(Image.open(tmp_path / "b2a" / "plain.png")))

    p2p = tmp_path / "p2p"
    r = run_cli("train", "--variant", "pix2pix", "--data", str(edges_dir), "--steps", "2",
                "--set", "g_width=4", "--set", "d_width=4", "--set", "threads=1",
                "--out", str(p2p), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run_cli("translate", str(p2p), "--in", str(src / "plain.png"), "--out",
                str(tmp_path / "p"))
    assert r.returncode == 0 and (tmp_path / "p" / "plain.png").exists()
    r = run_cli("translate", str(p2p), "--in", str(src), "--out", str(tmp_path / "q"),
                "--direction", "b2a")
    assert r.returncode == 2 and "b2a is not available for pix2pix" in r.stderr
    r = run_cli("sample", str(p2p), "--n", "2", "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 2 and "use `ganforge translate`" in r.stderr


@pytest.fixture(scope="module")
def cyclegan_run(shoes, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve-cyc") / "run"
    train(build_config([{**TINY, "variant": "cyclegan", "data": str(shoes / "sandal"),
                         "data_b": str(shoes / "sneaker"), "size": 28, "res_blocks": 1,
                         "g_width": 4, "d_width": 4, "steps": 2, "sample_every": 2}]), run,
          progress=False)
    return run


def png_of(path) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    Image.open(path).save(buf, format="PNG")
    return buf.getvalue()


def test_explorer_translates_uploads(cyclegan_run, shoes):
    from fastapi.testclient import TestClient

    from ganforge.serve import create_app

    upload = png_of(next((shoes / "sandal").iterdir()))
    with TestClient(create_app(cyclegan_run, threads=1)) as client:
        info = client.get("/api/info").json()
        assert info["kind"] == "translation" and info["directions"] == ["a2b", "b2a"]
        outs = {}
        for d in ("a2b", "b2a"):
            r = client.post(f"/api/translate?direction={d}", content=upload)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            with Image.open(_bytes_io(r.content)) as im:
                assert (im.size, im.mode) == ((28, 28), "L")
            outs[d] = r.content
        assert outs["a2b"] != outs["b2a"]
        r = client.post("/api/translate", content=b"not an image")
        assert r.status_code == 400 and "cannot use the uploaded image" in r.json()["error"]
        r = client.post("/api/translate", content=b"x" * (9 * 1024 * 1024))
        assert r.status_code == 413
        assert client.get("/api/latent", params={"seed": 1}).status_code == 400


def _bytes_io(b: bytes):
    import io as _io

    return _io.BytesIO(b)


def test_translate_view_in_a_real_browser(cyclegan_run, shoes, tmp_path):
    from playwright.sync_api import sync_playwright
    from test_serve import serving

    from ganforge.serve import create_app

    upload = tmp_path / "sandal.png"
    upload.write_bytes(png_of(next((shoes / "sandal").iterdir())))
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    with serving(create_app(cyclegan_run, threads=1)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("#view-translate:not([hidden])")
        assert page.is_hidden("#tabs [data-view='explore']")
        page.set_input_files("#translate-file", str(upload))
        page.wait_for_function("() => document.getElementById('translate-out')"
                               ".dataset.translations === '1'")
        size = page.evaluate("() => [document.getElementById('translate-out').naturalWidth,"
                             " document.getElementById('translate-out').naturalHeight]")
        assert size == [28, 28]
        page.select_option("#translate-direction", "b2a")
        page.wait_for_function("() => document.getElementById('translate-out')"
                               ".dataset.translations === '2'")
        browser.close()
    assert not errors, errors


def test_evaluate_pix2pix_reports_fid_l1_and_psnr(edges_dir, tmp_path):
    run = tmp_path / "p2p"
    train(build_config([{**TINY, "variant": "pix2pix", "data": str(edges_dir), "steps": 2,
                         "g_width": 4, "d_width": 4}]), run, progress=False)
    r = run_cli("evaluate", str(run), "--n", "12", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["kind"] == "translation" and res["n_translated"] == res["n_target"] == 12
    # L1 and PSNR of the model's translations of the first 12 pairs, computed here
    from ganforge.sample import load_generator

    pairs = data_cond.load_paired(edges_dir)
    b = np.asarray(pairs.b.images[:12]).astype(np.float64)
    fake = load_generator(run).translate(np.asarray(pairs.a.images[:12])).astype(np.float64)
    mse = ((fake - b) ** 2).mean(axis=(1, 2, 3))
    assert res["l1"] == pytest.approx(np.abs(fake - b).mean() / 255, rel=1e-9)
    assert res["psnr"] == pytest.approx(np.mean(10 * np.log10(255 ** 2 / mse)), rel=1e-9)
    assert res["fid"] > 0
    r = run_cli("evaluate", str(run), "--direction", "b2a")
    assert r.returncode == 2 and "b2a is not available" in r.stderr
