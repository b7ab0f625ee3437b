"""Evaluation wired into training (best checkpoint by FID) and the `evaluate` command."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from ganforge import checkpoint, selection
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
    # the trainer kept, as it went, the checkpoint the rule picks from the whole log, and
    # the lowest quick FID
    best = selection.best_step((r["step"], r["fid"]) for r in evals)
    ckpt = checkpoint.load_checkpoint(eval_run / "checkpoints" / "best.safetensors")
    assert ckpt.step == best
    assert ckpt.meta["state"]["best_fid"] == pytest.approx(min(r["fid"] for r in evals))
    assert load_generator(eval_run).step == best  # sample/serve use best by default
    assert load_generator(eval_run, prefer="latest").step == 15
    assert (eval_run / "plots" / "quality.png").exists()
    # its quality plot draws the two measured figures, the best checkpoint marked
    from ganforge import io, plots

    plan = plots.plot_plan(io.read_jsonl(eval_run / "metrics.jsonl"))["quality.png"]
    assert [list(a.series) for a in plan.axes] == [["fid24_train"], ["kid24_train"]]
    assert plan.best_step == ckpt.step and list(plan.axes[1].bands) == ["kid24_train"]


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


def test_evaluate_json_is_one_document_on_first_and_cached_runs(eval_run, tmp_path):
    """With --json stdout is exactly one JSON document: on the first run (the --ref folder is
    prepared, and its report goes to stderr) and on the second (from the cache). A run is
    compared at the generator's resolution, and the results say so; the figures name the
    folder, not a split it is not."""
    from ganforge.data import read_idx

    ref = tmp_path / "ref-pngs"
    ref.mkdir()
    for i, im in enumerate(read_idx(_fmnist_test())[:30]):
        Image.fromarray(np.pad(im, 2)).save(ref / f"{i}.png")  # 32x32: prepared to 28x28
    args = ("evaluate", str(eval_run), "--ref", str(ref), "--n", "20", "--metrics",
            "fid,kid,pr", "--json")
    first, second = run_cli(*args, cwd=tmp_path), run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "prepared 30 images (28x28" in first.stderr and "prepared" not in second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a == b
    for key in ("fid20_ref-pngs", "kid20_ref-pngs", "precision20_ref-pngs",
                "recall20_ref-pngs"):
        assert key in a
    assert a["n_fake"] == 20 and a["n_real"] == 30 and a["fid20_ref-pngs"] > 0
    assert "TF-Inception" in a["protocol"]
    assert a["resolution"].startswith("28x28, the generator's")


def test_evaluate_two_sets_each_at_its_own_resolution(color_folder, tmp_path):
    """--real/--fake: a 28x28 gray set against a 40x48 colour set, neither resized before the
    Inception resize; the prepared test split is called `test`."""
    from ganforge.data import prepare

    prepare("fashion-mnist:test", tmp_path / "small", limit=24, progress=False)
    r = run_cli("evaluate", "--real", "small", "--fake", str(color_folder / "a"), "--metrics",
                "fid", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert out[1].startswith("fid48_test = ") and "48 generated vs 24 test images" in out[1]
    assert out[2] == ("resolution: each set at its own resolution, nothing resized before the "
                      "Inception resize to 299x299 (real 28x28, generated 40x48)")
    assert "read" in r.stderr  # the progress bar of reading the folder: stderr only


def _numpy_cs(logits: np.ndarray, splits: int = 10) -> float:
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean over each split, averaged over splits."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return float(np.mean([np.exp(np.mean(np.sum(part * np.log(part / part.mean(0)), 1)))
                          for part in np.array_split(p, splits)]))


def test_classifier_score_of_an_unconditional_fashion_mnist_run(eval_run, fmnist_dir):
    """--metrics cs: the IS formula over the classes of ganforge's small CNN, trained once on
    the run's labelled training data and cached; named cs40_train and said not to be the
    TF-Inception IS. No Inception network is needed for it."""
    from ganforge.classifier import cached_classifier, logits
    from ganforge.data import load_dataset
    from ganforge.metrics.training import generator_batches
    from ganforge.sample import load_generator
    from ganforge.variants import get_variant

    r = run_cli("evaluate", str(eval_run), "--n", "40", "--metrics", "cs")
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[1]
    assert line.startswith("cs40_train = ") and "not the TF-Inception IS" in line
    res = json.loads(run_cli("evaluate", str(eval_run), "--n", "40", "--metrics", "cs",
                             "--json").stdout)
    ds = load_dataset(fmnist_dir)
    model, info = cached_classifier(ds.key, np.asarray(ds.images), ds.labels, 10)
    assert info["cached"]  # the one the CLI trained
    gen = load_generator(eval_run)
    fake = generator_batches(gen.G, get_variant(gen.config.variant), gen.config, 40, 0,
                             gen.device)(40)
    assert res["cs40_train"] == pytest.approx(_numpy_cs(logits(model, fake)), rel=1e-6)
    assert 1 <= res["cs40_train"] <= 10 and res["cs_classes"] == 10
    assert res["cs_n_train"] == 300 and 1 < res["cs_real"] <= 10


def test_evaluate_bad_input(eval_run, color_folder, tmp_path):
    r = run_cli("evaluate", "--real", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "both --real and --fake" in r.stderr
    r = run_cli("evaluate", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr
    r = run_cli("evaluate", str(eval_run), "--metrics", "is")
    assert r.returncode == 2 and "Inception Score needs the 1008-way" in r.stderr
    assert "--inception-classifier" in r.stderr and "--metrics cs" in r.stderr
    r = run_cli("evaluate", "--real", str(color_folder / "a"), "--fake", str(color_folder / "a"),
                "--metrics", "cs")
    assert r.returncode == 2 and "--metrics cs needs labelled reference data" in r.stderr


def _fmnist_test():
    from ganforge.data import fashion_mnist_files

    return fashion_mnist_files("test")[0]
