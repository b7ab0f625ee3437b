"""Which checkpoint is a run's best (ganforge.selection): the latest one whose quick FID is
within TOLERANCE of the lowest before it."""

import json
import math

from ganforge import checkpoint, io, plots, selection
from ganforge.config import build_config
from ganforge.serve import runinfo
from ganforge.train import Trainer, train


def test_tolerance_is_a_few_per_cent():
    # the figures below are written for 3 %; a change of the constant should be a decision
    assert selection.TOLERANCE == 0.03


def test_a_later_checkpoint_within_the_noise_becomes_the_best():
    # the 2026-11-30 Fashion-MNIST run: quick FID 74.0 at step 10,000, 74.8 at 14,065, where
    # 5,000 images scored the later one 20.4 and the earlier 22.1
    assert selection.best_step([(5000, 81.6), (10000, 74.0), (14065, 74.8)]) == 14065
    assert selection.replaces_best(74.8, 74.0) and selection.replaces_best(76.2, 74.0)
    assert not selection.replaces_best(76.3, 74.0)  # 74.0 * 1.03 = 76.22


def test_a_clearly_worse_later_checkpoint_leaves_the_best():
    assert selection.best_step([(1000, 74.0), (2000, 80.0)]) == 1000
    assert selection.best_step([(1000, 90.0), (2000, 60.0), (3000, 200.0)]) == 2000


def test_the_tolerance_is_from_the_lowest_so_the_best_cannot_creep_up():
    # 102 is within 3 % of 100 and 104 within 3 % of 102, but not of 100
    assert selection.best_step([(1, 100.0), (2, 102.0), (3, 104.0)]) == 2
    assert selection.best_step([(1, 100.0), (2, 102.0), (3, 104.0), (4, 102.9)]) == 4


def test_no_finite_figure_no_best():
    assert selection.best_step([]) is None
    assert selection.best_step([(1, math.nan), (2, math.inf)]) is None
    assert selection.best_step([(1, 50.0), (2, math.nan)]) == 1
    assert not selection.replaces_best(math.nan, None)
    assert selection.replaces_best(300.0, None)  # the first figure is the best so far
    # a lowest of NaN (a checkpoint written before non-finite figures were skipped) is none
    assert selection.replaces_best(300.0, math.nan)


def test_the_trainer_keeps_the_checkpoint_the_rule_picks(fmnist_dir, tmp_path, monkeypatch):
    """A real run whose three quick FIDs are given (the figures, not the training, are what
    this checks): 100 at step 5, 102 at 10 (within 3 %), 130 at 15 (clearly worse)."""
    figures = iter([100.0, 102.0, 130.0])

    def evaluate(self):
        fid = next(figures)
        return {"fid24_train": fid, "kid24_train": 0.01, "fid": fid, "kid": 0.01}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    cfg = build_config([{"data": str(fmnist_dir), "variant": "dcgan", "g_width": 8,
                         "d_width": 8, "z_dim": 16, "batch_size": 16, "steps": 15,
                         "log_every": 5, "sample_every": 5, "eval_n": 24, "eval_every": 5}])
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    best = checkpoint.load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert best.step == 10
    assert best.meta["state"]["best_fid"] == 100.0  # the lowest figure, for the record
    latest = checkpoint.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert latest.step == 15 and latest.meta["state"]["best_step"] == 10
    # the quality plot and the explorer mark the same step
    assert plots.plot_plan(io.read_jsonl(run / "metrics.jsonl"))["quality.png"].best_step == 10
    assert runinfo.metrics(run)["best"] == {"step": 10, "metric": "fid24_train",
                                             "value": 102.0}


def test_the_explorer_ranks_as_the_trainer_did_across_an_eval_n_change(tmp_path):
    """A run resumed with another eval_n logs its figures under another name; the explorer
    ranks them all by the trainer's `fid`, as the trainer did, and names the chosen one's."""
    rows = [(5, "fid250_train", 100.0), (10, "fid1000_train", 130.0),
            (15, "fid1000_train", 120.0)]
    io.write_text(tmp_path / "metrics.jsonl", "".join(
        json.dumps({"kind": "eval", "step": s, key: f, "fid": f}) + "\n" for s, key, f in rows))
    assert runinfo.metrics(tmp_path)["best"] == {"step": 5, "metric": "fid250_train",
                                                 "value": 100.0}
