"""Evaluation wired into training (best checkpoint by FID) and the `evaluate` command."""

import json

import pytest
from conftest import run_cli

from ganforge import checkpoint
from ganforge.config import build_config
from ganforge.sample import load_generator
from ganforge.train import train


@pytest.fixture(scope="module")
def eval_run(fmnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("evalrun") / "run"
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "g_width": 8,
                         "d_width": 8, "z_dim": 16, "batch_size": 16, "steps": 15,
                         "log_every": 5, "sample_every": 5, "eval_n": 24,
                         "eval_every": 5}])
    train(cfg, run, progress=False)
    return run


def test_training_keeps_best_by_fid(eval_run):
    lines = [json.loads(x) for x in (eval_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10, 15]
    assert all("fid24_train" in r and "kid24_train" in r for r in evals)
    best = min(evals, key=lambda r: r["fid"])
    ckpt = checkpoint.load_checkpoint(eval_run / "checkpoints" / "best.safetensors")
    assert ckpt.step == best["step"]
    assert ckpt.meta["state"]["best_fid"] == pytest.approx(best["fid"])
    assert load_generator(eval_run).step == best["step"]  # sample/serve use best by default
    assert load_generator(eval_run, prefer="latest").step == 15
    assert (eval_run / "plots" / "fid.png").exists()


def test_quick_fid_is_on_by_default_and_runs_at_the_end(fmnist_dir, tmp_path):
    """By default every run that passes `eval_every` steps is scored (so `best` exists); the
    end of the run is scored too, and a run too short to reach one evaluation is not."""
    default = build_config([{"data": str(fmnist_dir)}])
    assert default.eval_n > 0 and default.eval_every > 0
    tiny = {"data": str(fmnist_dir), "variant": "dcgan", "g_width": 8, "d_width": 8,
            "z_dim": 16, "batch_size": 16, "log_every": 3, "sample_every": 3, "eval_n": 12,
            "eval_every": 4}
    for steps, expected in ((7, [4, 7]), (3, [])):
        run = tmp_path / f"s{steps}"
        train(build_config([{**tiny, "steps": steps}]), run, progress=False)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines if r["kind"] == "eval"] == expected
        assert (run / "checkpoints" / "best.safetensors").exists() == bool(expected)


def test_evaluate_cli_prints_protocol_names(eval_run, fmnist_dir, tmp_path):
    r = run_cli("evaluate", str(eval_run), "--ref", str(fmnist_dir), "--n", "20",
                "--n-real", "30", "--metrics", "fid,kid,pr", "--no-progress", "--json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("fid20_train", "kid20_train", "precision20_train", "recall20_train"):
        assert key in res
    assert res["n_fake"] == 20 and res["n_real"] == 30 and res["fid20_train"] > 0
    assert "TF-Inception" in res["protocol"]
    from ganforge.data import prepare

    prepare("fashion-mnist:test", tmp_path / "small", limit=24, progress=False)
    r = run_cli("evaluate", "--real", "small", "--fake", "small", "--metrics", "fid",
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("fid24_test = ") and "24 generated vs 24 test images" in line
    assert abs(float(line.split()[2])) < 1e-3  # FID(x, x) = 0


def test_evaluate_bad_input(tmp_path):
    r = run_cli("evaluate", "--real", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "both --real and --fake" in r.stderr
    r = run_cli("evaluate", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr
