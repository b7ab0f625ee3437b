"""The run plots draw measurements only, each on an axis of its scale: what each plot would
draw is read from plots.plot_plan / plot_series without rendering."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ganforge import io, plots

# What the trainer writes (train.py log_interval / TrainingEvaluator.scores), plus the keys
# small-data training adds: augment_p and r_t (ADA) per log line, nn_dist / nn_ratio
# (memorisation) per evaluation.
TRAIN = [{"kind": "train", "step": s, "kimg": s * 0.064, "time_s": s / 10.0,
          "images_per_s": 640.0 + s, "lr_scale": 1.0, "loss_D": 1.3 - s / 100,
          "loss_G": 0.7 + s / 100, "d_acc_real": 0.6, "d_acc_fake": 0.55, "g_fool_rate": 0.45,
          "d_real": 0.2, "d_fake": -0.1, "grad_norm_D": 3.0, "grad_norm_G": 2.0,
          "augment_p": s / 400, "r_t": 0.2 + s / 200} for s in (25, 50, 75, 100)]
EVAL = [{"kind": "eval", "step": s, "n_real": 250, "fid250_train": f, "kid250_train": k,
         "kid250_train_std": 0.002, "n_fake": 250, "split": "train",
         "protocol": "TF-Inception 2015-12-05 ...", "dtype": "float32", "kid_subsets": 100,
         "kid_subset_size": 250, "fid": f, "kid": k, "nn_dist": d, "nn_ratio": d / 10}
        for s, f, k, d in ((50, 180.0, 0.15, 9.0), (100, 120.0, 0.09, 6.5))]
HEALTH = {"kind": "health", "step": 60, "problem": "non-finite", "detail": "loss_D became NaN",
          "action": "rolled back to step 50, learning rates x0.5"}
CONSTANTS = {"kid_subsets", "kid_subset_size", "n_real", "n_fake", "lr_scale", "kimg",
             "time_s", "step", "fid", "kid"}  # config, counts, clocks and duplicate aliases


def test_quality_plot_has_fid_and_kid_on_their_own_axes_with_the_best_step():
    plan = plots.plot_plan(TRAIN + EVAL + [HEALTH])
    q = plan["quality.png"]
    assert [list(a.series) for a in q.axes] == [["fid250_train"], ["kid250_train"]]
    assert [a.axis.label for a in q.axes] == ["FID", "KID"]
    assert q.axes[1].series["kid250_train"] == ([50, 100], [0.15, 0.09])
    assert q.axes[1].bands == {"kid250_train": ([50, 100], [0.002, 0.002])}  # the std band
    assert q.best_step == 100  # 120 after 180: the best checkpoint
    assert "fid250_train" in q.title and "kid250_train" in q.title
    assert q.events == [(60, "non-finite")]


def test_every_plot_draws_measurements_only():
    series = plots.plot_series(TRAIN + EVAL + [HEALTH])
    assert set(series) == {"losses.png", "accuracy.png", "scores.png", "grad_norms.png",
                           "speed.png", "augmentation.png", "quality.png", "memorisation.png"}
    drawn = {name for s in series.values() for name in s}
    assert not drawn & CONSTANTS
    assert series["augmentation.png"] == {"augment_p": ([25, 50, 75, 100],
                                                        [0.0625, 0.125, 0.1875, 0.25]),
                                          "r_t": ([25, 50, 75, 100], [0.325, 0.45, 0.575, 0.7])}
    memo = plots.plot_plan(EVAL)["memorisation.png"]
    assert [list(a.series) for a in memo.axes] == [["nn_dist"], ["nn_ratio"]]  # two scales
    assert memo.axes[1].series["nn_ratio"] == ([50, 100], [0.9, 0.65])
    assert memo.axes[1].axis.ref[0] == 0.5 and memo.best_step == 100
    # no evaluations: no quality plot; no ADA keys: no augmentation plot
    assert set(plots.plot_series(TRAIN[:1])) == {"losses.png", "accuracy.png", "scores.png",
                                                 "grad_norms.png", "speed.png",
                                                 "augmentation.png"}
    assert "augmentation.png" not in plots.plot_series(
        [{k: v for k, v in r.items() if k not in ("augment_p", "r_t")} for r in TRAIN])


def test_non_finite_values_and_stray_records_are_left_out():
    records = [*TRAIN[:2], {"kind": "train", "step": 60, "loss_D": float("nan"), "loss_G": 1.0},
               {"kind": "eval", "step": 70, "fid500_test": None}, "a string", {"step": "x"}]
    s = plots.plot_series(records)
    assert s["losses.png"]["loss_D"] == ([25, 50], [1.05, 0.8])
    assert s["losses.png"]["loss_G"][0] == [25, 50, 60]
    assert "quality.png" not in s


def test_plot_run_writes_the_planned_files(tmp_path):
    for r in TRAIN + EVAL + [HEALTH]:
        io.append_jsonl(tmp_path / "metrics.jsonl", r)
    written = plots.plot_run(tmp_path)
    assert sorted(p.name for p in written) == sorted(plots.plot_series(TRAIN + EVAL))
    with Image.open(tmp_path / "plots" / "quality.png") as im:
        w, h = im.size
        assert h > w / 2  # two panels, stacked
        assert np.asarray(im).std() > 0
