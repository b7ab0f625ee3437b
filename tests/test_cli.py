"""The real `ganforge` CLI end to end, and its one-line errors on bad input."""

import hashlib

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "train.lock":
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_end_to_end_fashion_mnist(tmp_path):
    r = run_cli("prepare", "fashion-mnist", "--out", "data", "--limit", "300", "--no-progress",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "prepared 300 images (28x28, 1 channel)" in r.stdout
    r = run_cli("train", "--data", "data", "--variant", "dcgan", "--steps", "12", "--out", "run",
                "--set", "g_width=8", "--set", "d_width=8", "--set", "batch_size=16",
                "--set", "sample_every=6", "--set", "log_every=6", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained to step 12" in r.stdout and "samples/step-000012.png" in r.stdout
    assert (tmp_path / "run" / "plots" / "losses.png").exists()
    r = run_cli("train", "--out", "run", "--resume", "--steps", "18", "--no-progress",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained to step 18" in r.stdout
    r = run_cli("sample", "run", "--n", "5", "--out", "s", "--grid", "g.png", "--seed", "1",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "s").glob("*.png"))
    assert len(files) == 5
    with Image.open(files[0]) as im:
        assert im.size == (28, 28) and im.mode == "L"
    r = run_cli("interpolate", "run", "--seeds", "1", "2", "--frames", "6", "--out", "w.gif",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "w.gif") as im:
        assert im.n_frames == 10  # 6 there and 4 back


def test_end_to_end_colour_folder(color_folder, tmp_path):
    r = run_cli("train", "--data", str(color_folder), "--variant", "sngan", "--size", "32",
                "--steps", "6", "--out", "run", "--set", "g_width=8", "--set", "d_width=8",
                "--set", "batch_size=16", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "prepared 96 images (32x32, 3 channels)" in r.stdout
    r = run_cli("sample", "run", "--n", "3", "--out", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "s" / "sample-00002.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_preset_fast_trains_as_the_readme_says(fmnist_dir, tmp_path):
    """`--preset fast` (the recipe `make demo`'s 60,000 Fashion-MNIST images get, and the
    README's headline), for a few steps on a few hundred images: its settings are the ones
    used, and the run samples."""
    import json

    from ganforge.config import PRESETS

    r = run_cli("train", "--preset", "fast", "--data", str(fmnist_dir), "--steps", "3",
                "--set", "threads=1", "--set", "sample_every=3", "--out", "run",
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained to step 3" in r.stdout and "samples/step-000003.png" in r.stdout
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    fast = {k: v for k, v in PRESETS["fast"].items() if k not in ("steps", "sample_every")}
    assert {k: cfg[k] for k in fast} == fast
    assert fast["variant"] == "dcgan" and fast["ema"] > 0
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [3] and np.isfinite(log[0]["loss_D"])
    r = run_cli("sample", "run", "--n", "4", "--grid", "g.png", cwd=tmp_path)
    assert r.returncode == 0 and "(step 3)" in r.stdout, r.stderr


@pytest.fixture(scope="module")
def small_run(fmnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    r = run_cli("train", "--data", str(fmnist_dir), "--variant", "mlp", "--steps", "3",
                "--out", "run", "--set", "batch_size=8", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr
    return root


BAD = {
    "unknown variant": (["train", "--variant", "bogus", "--out", "new"], "unknown variant 'bogus'"),
    "unknown key": (["train", "--set", "lr_dd=1", "--out", "new"],
                    "unknown config key 'lr_dd' (did you mean lr_d"),
    "wrong type": (["train", "--set", "batch_size=abc", "--out", "new"],
                   "config key 'batch_size' expects an int"),
    "negative size": (["train", "--set", "batch_size=-4", "--out", "new"],
                      "'batch_size' must be >= 1"),
    "missing data": (["train", "--data", "no/such/dir", "--out", "new"],
                     "data source not found: no/such/dir"),
    "empty data": (["train", "--data", "empty", "--out", "new"], "no image files"),
    "not a checkpoint": (["sample", "notes.txt", "--n", "2", "--out", "x"],
                         "is not a ganforge checkpoint"),
    "truncated checkpoint": (["sample", "half.safetensors", "--n", "2", "--out", "x"],
                             "truncated"),
    "resume without run": (["train", "--out", "empty", "--resume"], "nothing to resume"),
    "run exists": (["train", "--out", "run", "--variant", "mlp"], "already holds a run"),
    "bad config file": (["train", "--config", "cfg.json", "--out", "new"],
                        "unknown config key 'learning_rate'"),
    "bad truncation": (["sample", "run", "--n", "2", "--out", "x", "--truncation", "nan"],
                       "truncation must be in (0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_damages_nothing(small_run, case):
    root = small_run
    (root / "empty").mkdir(exist_ok=True)
    (root / "notes.txt").write_text("hello")
    (root / "cfg.json").write_text('{"learning_rate": 0.1}')
    src = (root / "run" / "checkpoints" / "latest.safetensors").read_bytes()
    (root / "half.safetensors").write_bytes(src[: len(src) // 3])
    before = tree_digest(root / "run")
    args, message = BAD[case]
    r = run_cli(*args, cwd=root)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0] and "Traceback" not in r.stderr
    assert tree_digest(root / "run") == before
    assert not (root / "new").exists()


def test_help_lists_variants_and_examples():
    r = run_cli("train", "--help")
    assert r.returncode == 0
    for name in ("mlp", "dcgan", "wgan", "wgan-gp", "sngan", "examples:", "batch_size"):
        assert name in r.stdout
    assert np.all([c in r.stdout for c in ("--resume", "--set")])


def test_a_preset_with_another_variant_leaves_out_what_that_variant_does_not_read(capsys):
    """`--preset fast --variant cgan`: cgan's networks read the preset's d_convs but not its
    g_selfmod, which is left out with a note instead of refused; the preset's own variant
    keeps everything."""
    from ganforge.cli import preset_for_variant
    from ganforge.config import PRESETS, build_config
    from ganforge.variants import get_variant

    layer = preset_for_variant(PRESETS["fast"], "fast", "cgan", say=True)
    assert "note: cgan does not read the `fast` preset's g_selfmod" in capsys.readouterr().out
    cfg = build_config([layer, {"variant": "cgan"}])
    get_variant("cgan").check(cfg)
    assert cfg.d_convs == 1 and not cfg.g_selfmod and cfg.lr_g == PRESETS["fast"]["lr_g"]
    assert preset_for_variant(PRESETS["fast"], "fast", "wgan-gp", say=True) == PRESETS["fast"]
    assert capsys.readouterr().out == ""
