"""The explorer page in a real headless Chromium (Playwright) against a real server.

Screenshots land in test-artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve import best_eval, make_run, one_torch_thread, serving  # sibling's helpers

from ganforge import io
from ganforge.serve import create_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                                "(make browser)")

# Draws the shown <img> into a canvas and returns its pixels (blob URLs are same-origin).
PIXELS = """() => {
  const img = document.getElementById('image');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
}"""
IDLE = "() => window.explorer.sent === window.explorer.shown && window.explorer.shown > 0"


@pytest.fixture(scope="module")
def run_dir(fmnist_dir, tmp_path_factory) -> Iterator[Path]:
    with one_torch_thread():
        yield make_run(fmnist_dir, tmp_path_factory.mktemp("serve-browser") / "run")


@pytest.fixture(scope="module")
def url(run_dir) -> Iterator[str]:
    with one_torch_thread(), serving(create_app(run_dir, threads=1)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    """A fresh page that records every URL it asks for and any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.requested = []
    pg.errors = []
    pg.on("request", lambda r: pg.requested.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(url + "/")
    yield pg
    context.close()
    assert not pg.errors, pg.errors
    # Everything came from this server (or from blobs the page made itself): works offline.
    foreign = [u for u in pg.requested if not u.startswith((url, "blob:", "data:"))]
    assert not foreign, foreign


def drag(page, selector: str, values: list[float]) -> None:
    """Move a range input through values, one input event each, as fast as a drag."""
    page.eval_on_selector(selector, """(el, values) => {
        for (const v of values) { el.value = String(v);
          el.dispatchEvent(new Event('input', {bubbles: true})); }
    }""", values)


def test_sliders_random_and_truncation_change_the_image(page):
    page.wait_for_function(IDLE)
    assert page.locator("#sliders input[type=range]").count() == 16
    assert "standard deviations" in page.inner_text("#view-explore")
    first = page.evaluate(PIXELS)
    assert len(first) == 28 * 28 * 4

    sent = page.evaluate("window.explorer.sent")
    values = [round(-3 + 0.1 * i, 2) for i in range(61)]  # a full sweep, 61 input events
    drag(page, "#sliders input[data-dim='3']", values)
    page.wait_for_function(IDLE)
    moved = page.evaluate(PIXELS)
    assert moved != first
    # Coalesced: far fewer requests than input events, and the last one shows the last state.
    new_requests = page.evaluate("window.explorer.sent") - sent
    assert 1 <= new_requests < len(values) // 2
    assert page.evaluate("window.explorer.state.z[3]") == 3.0

    page.click("#random")
    page.wait_for_function("() => window.explorer.state.seed !== 0")
    page.wait_for_function(IDLE)
    randomised = page.evaluate(PIXELS)
    assert randomised != moved

    drag(page, "#truncation", [0.5, 0.2, 0.05])
    page.wait_for_function(IDLE)
    assert page.inner_text("#truncation-value") == "0.05"
    assert page.evaluate(PIXELS) != randomised

    page.wait_for_selector("#directions input[type=range]")
    assert "explains" in page.inner_text("#directions")
    # back to psi = 1: at psi 0.05 a direction step of 3 moves z by only 0.15, which a barely
    # trained tiny G need not turn into a different 8-bit image
    drag(page, "#truncation", [0.5, 1.0])
    page.wait_for_function(IDLE)
    before = page.evaluate(PIXELS)
    drag(page, "#direction-0", [1.0, 2.0, 3.0])
    page.wait_for_function(IDLE)
    assert page.evaluate(PIXELS) != before

    page.click("#reset")
    page.wait_for_function(IDLE)
    assert page.inner_text("#truncation-value") == "1.00"
    assert page.inner_text("#directions output >> nth=0") == "0.00"
    assert page.locator("#class-picker").is_hidden()  # an unconditional model
    assert page.locator("[data-view=translate]").is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-explore.png"), full_page=True)


def test_interpolation_view_plays_and_offers_the_gif(page):
    page.wait_for_function(IDLE)
    page.click("[data-view=interpolate]")
    page.check("#use-current")
    page.fill("#frames", "8")
    page.click("#walk-go")
    page.wait_for_selector("#walk-download:not([hidden])")
    page.wait_for_function("() => document.getElementById('walk').naturalWidth > 0")
    assert page.get_attribute("#walk-download", "download").endswith(".gif")
    magic = page.evaluate("""async () => {
        const r = await fetch(document.getElementById('walk-download').href);
        const b = new Uint8Array(await r.arrayBuffer());
        return String.fromCharCode(...b.slice(0, 6));
    }""")
    assert magic == "GIF89a"


def test_run_view_draws_curves_and_grids_and_follows_training(page, run_dir):
    lock = os.open(run_dir / "train.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process would
    try:
        page.click("[data-view=run]")
        page.wait_for_selector(".chart svg path.series")
        titles = page.locator(".chart h3").all_inner_texts()
        assert titles == ["losses", "D accuracy and G fooling rate", "FID (lower is better)",
                          "KID (lower is better)"]
        paths = page.eval_on_selector_all(".chart path.series",
                                          "els => els.map(e => e.getAttribute('d'))")
        assert len(paths) == 2 + 3 + 1 + 1
        assert all(d.count("L") >= 1 for d in paths)  # lines through several points
        assert page.locator(".chart line.best").count() == 4  # best step marked on each
        assert page.locator(".chart line.event").count() == 4  # and the health event
        assert "step 15: non-finite" in page.inner_text("#events")  # the monitor's event
        best = best_eval(run_dir)
        assert (f"best fid8_train {best['fid8_train']:.2f} at step {best['step']}"
                in page.inner_text("#run-status"))
        assert "training" in page.inner_text("#run-status")
        page.wait_for_function("() => document.getElementById('run-grid').naturalWidth > 0")
        assert page.get_attribute("#run-grid", "src") == "/api/run/grid/20"
        page.click("#grid-best")
        page.wait_for_function("() => document.getElementById('run-grid').naturalWidth > 0")
        assert page.get_attribute("#run-grid", "src") == f"/api/run/grid/{best['step']}"
        assert "best" in page.inner_text("#grid-label")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-run.png"), full_page=True)

        # The run moves on: a new log line and a new grid appear without a reload.
        page.eval_on_selector("#grid-step", "el => { el.value = el.max; "
                              "el.dispatchEvent(new Event('input')); }")
        io.append_jsonl(run_dir / "metrics.jsonl", {"kind": "train", "step": 25,
                                                    "loss_D": 1.0, "loss_G": 1.0})
        shutil.copy(run_dir / "samples" / "step-000020.png",
                    run_dir / "samples" / "step-000030.png")
        page.wait_for_function("() => document.getElementById('run-grid')"
                               ".getAttribute('src') === '/api/run/grid/30'", timeout=15000)
        assert "step 25" in page.inner_text("#run-status")
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
