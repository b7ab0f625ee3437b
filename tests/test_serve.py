"""The web explorer's API on a real (tiny) trained run: over real HTTP, the validation table,
directions, run files, micro-batching, and a schemathesis fuzz from its own OpenAPI schema."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io as _io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import pytest
import schemathesis
import torch
from conftest import PixelFeatures
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode

from ganforge import checkpoint, io
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator
from ganforge.serve import bind, create_app, run_server
from ganforge.serve import directions as dirs
from ganforge.train import train

TINY = {"variant": "dcgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
        "log_every": 5, "sample_every": 10, "grid_size": 16, "steps": 20, "ema": 0.9,
        "threads": 1, "eval_n": 8, "eval_every": 10}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    # Two shared cores: more intra-op threads only spin against each other.
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


_PRISTINE: list[Path] = []  # the run trained once per session; each module gets a copy


def make_run(data_dir: Path, run_dir: Path) -> Path:
    """A 20-step DCGAN run on real images whose log the trainer itself wrote: a quick FID/KID
    of 8 images at steps 10 and 20 (on PixelFeatures), and a health event: G's weights turned
    NaN after step 13, the monitor sees it at step 15 and rolls back to step 10. Trained once
    per session (into a sibling directory), copied for every module that asks."""
    if not _PRISTINE:
        fired = []

        def nan_once(trainer) -> None:
            if trainer.step == 13 and not fired:
                fired.append(True)
                with torch.no_grad():
                    next(trainer.G.parameters()).fill_(float("nan"))

        pristine = run_dir.parent / "pristine-run"
        with mock.patch("ganforge.metrics.training.FeatureExtractor", PixelFeatures), \
                mock.patch("ganforge.metrics.training.FEATURE_DIM", 64):
            train(build_config([{"data": str(data_dir), **TINY}]), pristine, progress=False,
                  fault_hook=nan_once)
        _PRISTINE.append(pristine)
    shutil.copytree(_PRISTINE[0], run_dir)
    return run_dir


def logged(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in io.read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == kind]


def best_eval(run_dir: Path) -> dict:
    """The quick evaluation of the run's best checkpoint (the step the trainer saved it at)."""
    step = checkpoint.load_checkpoint(run_dir / "checkpoints" / "best.safetensors").step
    return next(r for r in logged(run_dir, "eval") if r["step"] == step)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """The app on a real uvicorn on 127.0.0.1 (a free port), in a thread; yields its URL."""
    with serving_server(app) as (url, _server):
        yield url


@contextlib.contextmanager
def serving_server(app) -> Iterator[tuple[str, object]]:
    """serving(), yielding (URL, the uvicorn server)."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def run_dir(fmnist_dir, tmp_path_factory) -> Iterator[Path]:
    with one_torch_thread():
        yield make_run(fmnist_dir, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def app(run_dir):
    with one_torch_thread():
        yield create_app(run_dir, threads=1)


@pytest.fixture(scope="module")
def served(app) -> Iterator[tuple[str, object]]:
    with serving_server(app) as url_server:
        yield url_server


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[0]


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(_io.BytesIO(data)))


def seed_z(seed: int) -> list[float]:
    return torch.randn(1, 16, generator=torch.Generator().manual_seed(seed))[0].tolist()


# ------------------------------------------------------------------ real HTTP


def test_info_and_images_over_http(url, run_dir):
    info = httpx.get(f"{url}/api/info").json()
    assert info["kind"] == "unconditional" and info["classes"] == []
    assert (info["z_dim"], info["size"], info["channels"], info["variant"]) == (16, 28, 1, "dcgan")
    assert info["step"] == 20 and info["ema"] is True and info["run"] == run_dir.name
    assert info["microbatch"] is True

    z = httpx.get(f"{url}/api/latent", params={"seed": 5}).json()["z"]
    assert z == pytest.approx(seed_z(5))
    r = httpx.post(f"{url}/api/image", json={"z": z, "truncation": 0.7})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["server-timing"].startswith("generate;dur=")
    img = png_array(r.content)
    # The served image is exactly what `ganforge sample --seed 5 --truncation 0.7` makes.
    gen = load_generator(run_dir)
    expected = gen.generate(gen.latents(1, 5), truncation=0.7)[0, :, :, 0]
    np.testing.assert_array_equal(img, expected)
    again = httpx.post(f"{url}/api/image", json={"z": z, "truncation": 0.7}).content
    other = httpx.post(f"{url}/api/image", json={"z": seed_z(6)}).content
    assert again == r.content and other != r.content


def test_keep_alive_responses_are_not_delayed(served):
    """bind() makes IPPROTO_TCP sockets, so asyncio turns Nagle off on accepted connections;
    with it on, each response on a kept-alive connection waited ~40 ms for a delayed ACK.
    Read from the server's own end of a kept-alive connection, whatever the machine's speed."""
    url, server = served
    with contextlib.closing(bind("127.0.0.1", 0)) as s:
        assert s.proto == socket.IPPROTO_TCP
    with httpx.Client(base_url=url) as c:
        for _ in range(3):
            c.get("/api/info").raise_for_status()
        ports = {c.get("/api/info").extensions["network_stream"].get_extra_info(
            "client_addr")[1]}  # one connection, kept alive
        ends = [conn.transport.get_extra_info("socket")
                for conn in list(server.server_state.connections)]
        ours = [e for e in ends if e.getpeername()[1] in ports]
        assert len(ours) == 1
        assert ours[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_page_and_static_files_are_local(url):
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "ganforge explorer" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(url + asset).status_code == 200
    for text in (page.text, httpx.get(f"{url}/static/app.js").text,
                 httpx.get(f"{url}/static/style.css").text):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "@import" not in text and "//cdn" not in text


def test_grid_and_interpolation(url, run_dir):
    gen = load_generator(run_dir)
    grid = png_array(httpx.get(f"{url}/api/grid", params={"seeds": "3,5-7", "nrow": 4}).content)
    assert grid.shape == (2 + 28 + 2, 2 + 4 * 30)
    tile = gen.generate(gen.latents(1, 6), 1.0)[0, :, :, 0]
    np.testing.assert_array_equal(grid[2:30, 2 + 2 * 30: 30 + 2 * 30], tile)
    post = httpx.post(f"{url}/api/grid", json={"seeds": [3, 5, 6, 7], "nrow": 4}).content
    np.testing.assert_array_equal(png_array(post), grid)

    gif = httpx.get(f"{url}/api/interpolate", params={"a": 1, "b": 2, "frames": 6})
    assert gif.headers["content-type"] == "image/gif"
    frames = Image.open(_io.BytesIO(gif.content))
    assert frames.n_frames == 6 + 4 and frames.size == (112, 112)  # bounced, upscaled x4
    # From the origin (the "reset" state) to a seed: slerp is undefined there, a line is used.
    strip = httpx.post(f"{url}/api/interpolate", json={"a": [0.0] * 16, "b": 2, "frames": 5,
                                                       "format": "png"})
    assert strip.status_code == 200 and png_array(strip.content).shape == (32, 2 + 5 * 30)


BAD_JSON = {"Content-Type": "application/json"}
CASES = [
    # (method, path, request kwargs, status, words the error must contain)
    ("post", "/api/image", {"json": {"z": [0.0] * 15}}, 422, "z: needs at least 16 values, got 15"),
    ("post", "/api/image", {"json": {"z": [0.0] * 17}}, 422, "z: takes at most 16 values"),
    ("post", "/api/image", {"content": '{"z": [NaN' + ", 0" * 15 + "]}", "headers": BAD_JSON},
     422, "z[0]: must be a finite number"),
    ("post", "/api/image", {"content": '{"z": [0' + ", 0" * 14 + ", Infinity]}",
                            "headers": BAD_JSON}, 422, "z[15]: must be a finite number"),
    ("post", "/api/image", {"content": '{"z": [1e999' + ", 0" * 15 + "]}", "headers": BAD_JSON},
     422, "z[0]: must be a finite number"),
    ("post", "/api/image", {"json": {"z": [0.0] * 15 + [1e4]}}, 422,
     "z[15]: Input should be less than or equal to 1000"),
    ("post", "/api/image", {"json": {"z": [0.0] * 16, "truncation": 0}}, 422,
     "truncation: Input should be greater than 0"),
    ("post", "/api/image", {"json": {"z": [0.0] * 16, "truncation": 1.5}}, 422,
     "truncation: Input should be less than or equal to 1"),
    ("post", "/api/image", {"json": {"z": [0.0] * 16, "truncaton": 0.5}}, 422,
     "truncaton: Extra inputs are not permitted"),
    ("post", "/api/image", {"json": {"z": ["a"] + [0.0] * 15}}, 422,
     "z[0]: Input should be a valid number"),
    ("post", "/api/image", {"content": "{oops", "headers": BAD_JSON}, 422,
     "request body is not valid JSON"),
    ("post", "/api/image", {"content": "[1, 2]", "headers": BAD_JSON}, 422,
     "request body must be a JSON object"),
    ("post", "/api/image", {}, 422, "body: Field required"),
    ("post", "/api/image", {"content": b"0" * (64 * 1024 + 1), "headers": BAD_JSON}, 413,
     "request body too large: the limit is 65536 bytes"),
    ("get", "/api/grid?seeds=0-64", {}, 422, "seeds: too many seeds: at most 64 images"),
    ("get", "/api/grid?seeds=5-1", {}, 422, "seeds: seed range 5-1 is backwards"),
    ("get", "/api/grid?seeds=../etc", {}, 422, "seeds: must look like 0,3,5-9"),
    ("get", "/api/grid?seeds=1&truncation=nan", {}, 422, "truncation: must be a finite number"),
    ("get", "/api/grid?seeds=1&truncation=inf", {}, 422, "truncation: must be a finite number"),
    ("get", "/api/grid", {}, 422, "seeds: Field required"),
    ("post", "/api/grid", {"json": {"seeds": list(range(65))}}, 422,
     "seeds: takes at most 64 values"),
    ("post", "/api/grid", {"json": {"seeds": [-1]}}, 422,
     "seeds[0]: Input should be greater than or equal to 0"),
    ("get", "/api/interpolate?a=1&b=2&frames=65", {}, 422,
     "frames: Input should be less than or equal to 64"),
    ("get", "/api/interpolate?a=1&b=2&frames=1", {}, 422,
     "frames: Input should be greater than or equal to 2"),
    ("get", "/api/interpolate?a=1&b=2&format=bmp", {}, 422, "format: must be gif or png"),
    ("post", "/api/interpolate", {"json": {"a": 1, "b": [0.0] * 3}}, 422, "b"),
    ("get", "/api/latent?seed=4294967296", {}, 422,
     "seed: Input should be less than or equal to 4294967295"),
    ("get", "/api/run/grid/-3", {}, 422, "step: Input should be greater than or equal to 0"),
    ("get", "/api/run/grid/abc", {}, 422, "step: Input should be a valid integer"),
    ("get", "/api/run/grid/15", {}, 404, "no sample grid at step 15"),
    ("get", "/api/nothing", {}, 404, "Not Found"),
    ("delete", "/api/image", {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("method,path,kwargs,status,message", CASES,
                         ids=[f"{c[0]} {c[1][:40]} -> {c[3]} {c[4][:30]}" for c in CASES])
def test_validation(client, method, path, kwargs, status, message):
    r = client.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_chunked_body_over_the_limit_is_refused_unread(url):
    def chunks():
        for _ in range(80):
            yield b"1" * 1024

    r = httpx.post(f"{url}/api/image", content=chunks(), headers=BAD_JSON)
    assert r.status_code == 413 and "too large" in r.json()["error"]


@pytest.mark.parametrize("raw_path", [
    "/api/run/grid/../../config.json", "/api/run/grid/..%2F..%2Fconfig.json",
    "/api/run/grid/%2e%2e/%2e%2e/config.json", "/api/run/grid/10/../../../config.json",
    "/api/run/grid//etc/passwd", "/api/run/grid/10%00.png", "/static/../app.py",
    "/static/%2e%2e/app.py", "/static/..%2F..%2Fcli.py", "/api/run/grid/1e1",
])
def test_path_traversal_is_refused(url, raw_path):
    """Raw request lines (an HTTP client would normalise the dots away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]
    assert b"variant" not in reply and b"import" not in reply and b"root:" not in reply


# ------------------------------------------------------------------ directions


def test_directions_are_unit_ordered_and_cached(client, run_dir, monkeypatch):
    d = client.get("/api/directions").json()
    assert d["layer"] == "project" and d["samples"] == dirs.N_SAMPLES
    vecs = np.array([x["vector"] for x in d["directions"]])
    explained = [x["explained"] for x in d["directions"]]
    assert vecs.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert explained == sorted(explained, reverse=True) and 0 < sum(explained) <= 1
    assert [x["name"] for x in d["directions"]] == [f"direction {i}" for i in range(1, 7)]
    cached = list((run_dir / "explorer").glob("directions-*.npy"))
    assert len(cached) == 1
    # A second server for the same checkpoint reads the cache instead of recomputing.
    monkeypatch.setattr(dirs, "compute", lambda *a, **k: pytest.fail("recomputed"))
    again = dirs.load_or_compute(load_generator(run_dir))
    np.testing.assert_allclose(again.vectors, vecs, atol=1e-5)


def test_directions_move_the_leading_principal_axis(run_dir):
    """Moving z along direction 1 changes the features' first PCA coordinate far more than
    moving by the same distance in a random direction."""
    gen = load_generator(run_dir)
    d = dirs.load_or_compute(gen)
    z = gen.latents(400, seed=99)
    feats = dirs.features(gen, z)
    centred = feats - feats.mean(0)
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    u = torch.from_numpy(d.vectors[0])
    rand = torch.randn(16, generator=torch.Generator().manual_seed(1))
    rand /= rand.norm()
    along = ((dirs.features(gen, z + u) - feats) @ axis).abs().mean()
    random = ((dirs.features(gen, z + rand) - feats) @ axis).abs().mean()
    assert along > 2 * random


# ------------------------------------------------------------------ run files


def test_run_metrics_and_grids(client, run_dir):
    """The run view on the log the trainer wrote: its evaluations and the health event the
    monitor raised (a NaN rolled back), the best step by FID."""
    from ganforge.health import ADVICE

    m = client.get("/api/run/metrics").json()
    assert m["available"] and not m["training"]
    assert [r["step"] for r in m["train"]] == [5, 10, 15, 20]
    assert {"loss_D", "loss_G", "d_acc_real", "d_acc_fake", "g_fool_rate"} <= set(m["train"][0])
    assert [r["step"] for r in m["eval"]] == [10, 20]
    assert m["score_keys"] == ["fid8_train", "kid8_train"]
    (event,) = logged(run_dir, "health")
    assert m["events"] == [event] and event["problem"] in ADVICE
    assert (event["step"], event["problem"]) == (15, "non-finite")
    assert event["action"] == "rolled back to step 10, learning rates x0.5"
    best = best_eval(run_dir)
    assert m["best"] == {"step": best["step"], "metric": "fid8_train",
                         "value": best["fid8_train"]}
    assert client.get("/api/run/grids").json() == {"available": True, "steps": [10, 20]}
    r = client.get("/api/run/grid/20")
    assert r.headers["content-type"] == "image/png"
    assert r.content == (run_dir / "samples" / "step-000020.png").read_bytes()


def test_training_is_detected_from_the_run_lock(client, run_dir):
    fd = os.open(run_dir / "train.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a training process holds
        assert client.get("/api/run/metrics").json()["training"] is True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert client.get("/api/run/metrics").json()["training"] is False


def test_damaged_log_and_stray_files(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("explorer"))
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"kind": "eval", "step": 25, "fid8_train": NaN}\n')
        f.write('"just a string"\n{"step": "x"}\n{"kind": "train", "step": 30, "loss_D": 0.')
    (copy / "samples" / "step-12.png").write_bytes(b"not a grid name")
    (copy / "samples" / "notes.txt").write_text("hello")
    (copy / "samples" / "step-0000030.png").write_bytes(b"\x89PNG seven digits")
    with one_torch_thread(), serving(create_app(copy, threads=1)) as base, \
            httpx.Client(base_url=base) as c:
        m = c.get("/api/run/metrics").json()
        assert [r["step"] for r in m["eval"]] == [10, 20, 25]
        assert m["eval"][-1]["fid8_train"] is None
        assert m["best"]["step"] == best_eval(run_dir)["step"]
        assert c.get("/api/run/grids").json()["steps"] == [10, 20, 30]
        assert c.get("/api/run/grid/30").content == b"\x89PNG seven digits"
        (copy / "samples" / "step-000020.png").unlink()  # gone since the page listed it
        r = c.get("/api/run/grid/20")
        assert r.status_code == 404 and r.json()["error"] == "no sample grid at step 20"


def test_checkpoint_outside_a_run(run_dir, tmp_path):
    lone = tmp_path / "lone.safetensors"
    shutil.copy(run_dir / "checkpoints" / "latest.safetensors", lone)
    with one_torch_thread(), serving(create_app(lone, threads=1)) as base, \
            httpx.Client(base_url=base) as c:
        assert c.get("/api/info").json()["run"] is None
        assert c.get("/api/run/metrics").json()["available"] is False
        assert c.get("/api/run/grids").json() == {"available": False, "steps": []}
        r = c.get("/api/run/grid/10")
        assert r.status_code == 404 and "not inside a run directory" in r.json()["error"]
        assert c.post("/api/image", json={"z": [0.0] * 16}).status_code == 200


# ------------------------------------------------------------------ micro-batching


async def _concurrent_images(base: str, zs: list[list[float]]) -> list[bytes]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        rs = await asyncio.gather(*(c.post("/api/image", json={"z": z}) for z in zs))
    assert all(r.status_code == 200 for r in rs)
    return [r.content for r in rs]


@pytest.mark.parametrize("microbatch", [True, False])
def test_concurrent_requests_are_micro_batched(run_dir, microbatch):
    zs = [seed_z(s) for s in range(24)]
    with one_torch_thread():
        app = create_app(run_dir, threads=1, microbatch=microbatch)
        with serving(app) as base:
            pngs = asyncio.run(_concurrent_images(base, zs))
    stats = app.state.explorer.batcher.stats()
    gen = load_generator(run_dir)
    expected = gen.generate(torch.tensor(zs))
    for png, want in zip(pngs, expected, strict=True):
        # Every client gets its own image, whatever batch it was computed in.
        diff = np.abs(png_array(png).astype(int) - want[:, :, 0].astype(int)).max()
        assert diff <= 1
    if microbatch:
        assert stats["max_batch_seen"] > 1 and stats["batches"] < len(zs)
    else:
        assert stats["max_batch_seen"] == 1 and stats["batches"] == len(zs)


def test_microbatch_switch_from_environment(run_dir, monkeypatch):
    monkeypatch.setenv("GANFORGE_SERVE_MICROBATCH", "0")
    with one_torch_thread():
        assert create_app(run_dir, threads=1).state.explorer.batcher.enabled is False


# ------------------------------------------------------------------ the CLI


def test_cli_serve_binds_locally_and_answers(run_dir, tmp_path):
    # --port 0: the server takes a free port itself and prints it (a port picked here and freed
    # before the server binds it could be taken by another process in between). Its stderr
    # (uvicorn's log) goes to a file: a pipe nobody reads could fill and stall the server.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    err_path = tmp_path / "serve.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ganforge", "serve", str(run_dir),
                                 "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"server exited: {err_path.read_text()}"
            lines.append(line)
            if line.startswith("local only"):
                break
        out = "".join(lines)
        shown = re.search(r"open http://127\.0\.0\.1:(\d+)/", out)
        assert shown and "bound to 127.0.0.1" in out, out
        port = int(shown.group(1))
        assert port != 0
        info = None
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                info = httpx.get(f"http://127.0.0.1:{port}/api/info").json()
                break
            time.sleep(0.1)
        assert info is not None, f"no answer on port {port}: {err_path.read_text()}"
        assert info["z_dim"] == 16
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_binding_elsewhere_warns(run_dir, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # no serving
    with one_torch_thread():
        run_server(run_dir, host="0.0.0.0", port=0)
    out, err = capsys.readouterr()
    assert "open http://0.0.0.0:" in out and "local only" not in out
    assert "warning: bound to 0.0.0.0, so anyone who can reach this machine" in err
    with pytest.raises(GanforgeError, match="cannot bind to host 'no.such.host.invalid'"):
        bind("no.such.host.invalid", 0)
    with pytest.raises(GanforgeError, match="--port must be between 0 and 65535"):
        bind("127.0.0.1", 70000)


def test_cli_serve_port_in_use_is_a_clean_error(run_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "ganforge", "serve", str(run_dir), "--port",
                            str(port)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr


# ------------------------------------------------------------------ fuzzing


def _fuzz(op, mode: GenerationMode, seen: dict[str, set[int]]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call()
        seen.setdefault(op.label, set()).add(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query,
                                            response.text[:300])
        if response.status_code >= 400:
            assert json.loads(response.text)["error"]

    check()


def test_fuzz_api_from_its_openapi_schema(url):
    """schemathesis generates valid and invalid requests for every operation in the app's own
    /openapi.json: none may give a 5xx, and every refusal carries an error message.

    (Driven through plain hypothesis: schemathesis' pytest plugin does not run on pytest 9.)
    """
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    seen: dict[str, set[int]] = {}
    for op in operations:
        _fuzz(op, GenerationMode.POSITIVE, seen)
        # An operation without inputs has no invalid requests to generate.
        with contextlib.suppress(Unsatisfiable):
            _fuzz(op, GenerationMode.NEGATIVE, seen)
    # Both sides were reached: real images and validation refusals.
    assert 200 in seen["POST /api/image"] and 422 in seen["POST /api/image"], seen
    assert 422 in seen["GET /api/grid"] and 422 in seen["POST /api/interpolate"], seen
