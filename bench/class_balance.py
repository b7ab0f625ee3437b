"""Does an unconditional Fashion-MNIST generator draw every class, and with the real variety?

    python bench/class_balance.py RUN [RUN ...] [--n 5000] [--seed 0] [--prefer best] [--json]

For each run (a 28 px gray Fashion-MNIST generator), N samples of its averaged G, from the
latents `ganforge evaluate` draws with the same seed (50 at a time, its default batch), are
labelled by ganforge's small classifier of the Fashion-MNIST classes (trained once on the
60,000 training images and cached, as `evaluate` does for conditional models). Printed per
run: the share of samples in each class next to the share the same classifier gives the
10,000 test images (so its own errors largely cancel, as far as it errs alike on real and
generated images); the total-variation distance between the two (0 = the same proportions,
1 = disjoint); and each class's within-class diversity, the mean pairwise distance (pixels,
16x16-pooled) of the samples labelled k over that of as many test images labelled k
(ganforge.evaluate_cond.within_class_diversity; 1 = as spread out as the real ones, null
where fewer than two samples are labelled k). A generator that drops a class or collapses
within one shows here even where its FID is low. `--json` prints one JSON document instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import numpy as np

from ganforge import data_cond
from ganforge.classifier import cached_classifier, predict
from ganforge.errors import GanforgeError
from ganforge.evaluate_cond import within_class_diversity
from ganforge.metrics.training import eval_inputs
from ganforge.sample import load_generator
from ganforge.variants import get_variant

# `ganforge evaluate --batch-size`'s default: its latents are drawn this many at a time
EVALUATE_BATCH = 50


def balance(run: str, n: int, seed: int, prefer: str, clf, x_test: np.ndarray,
            y_test_pred: np.ndarray, n_classes: int) -> dict:
    gen = load_generator(run, prefer=prefer)
    if (gen.size, gen.size, gen.channels) != x_test.shape[1:]:
        raise GanforgeError(f"{run}: a {gen.size} px {gen.channels}-channel generator; the "
                            f"classifier takes Fashion-MNIST's {x_test.shape[1]} px gray images")
    z, _ = eval_inputs(get_variant(gen.config.variant), gen.config, n, seed, EVALUATE_BATCH)
    images = gen.generate(z)
    pred = predict(clf, images)
    share = np.bincount(pred, minlength=n_classes) / len(pred)
    real = np.bincount(y_test_pred, minlength=n_classes) / len(y_test_pred)
    fakes = [images[pred == c] for c in range(n_classes)]
    return {"run": run, "step": gen.step, "n": n, "share": share.round(4).tolist(),
            "share_test": real.round(4).tolist(),
            "tv_distance": float(0.5 * np.abs(share - real).sum()),
            "diversity": [None if np.isnan(d) else round(float(d), 3) for d in
                          within_class_diversity(fakes, x_test, y_test_pred)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefer", default="best", choices=("best", "latest"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # a first preparation reports on stdout
        train = data_cond.resolve_labelled("fashion-mnist", progress=False)
        test = data_cond.resolve_labelled("fashion-mnist:test", progress=False)
    classes = list(train.meta["classes"])
    clf, _ = cached_classifier(train.key, np.asarray(train.images), np.asarray(train.labels),
                               len(classes), progress=False)
    x_test = np.asarray(test.images)
    # the test images as the classifier labels them: its own errors largely cancel in the
    # comparison, as far as it errs alike on real and generated images
    y_test_pred = predict(clf, x_test)
    acc = float((y_test_pred == np.asarray(test.labels)).mean())
    try:
        rows = [balance(r, args.n, args.seed, args.prefer, clf, x_test, y_test_pred,
                        len(classes)) for r in args.runs]
    except GanforgeError as e:
        sys.exit(f"error: {e}")
    if args.json:
        json.dump({"classes": classes, "classifier_test_accuracy": acc, "runs": rows},
                  sys.stdout, allow_nan=False)
        print()
        return
    print(f"classifier accuracy on the 10,000 test images: {acc:.4f}")
    for row in rows:
        print(f"\n{row['run']} (step {row['step']}, {row['n']} samples): total-variation "
              f"distance to the test images' class shares {row['tv_distance']:.4f}")
        print(f"  {'class':<12} {'samples':>8} {'test':>8} {'diversity':>10}")
        for name, s, t, d in zip(classes, row["share"], row["share_test"], row["diversity"],
                                 strict=True):
            print(f"  {name:<12} {s:>8.3f} {t:>8.3f} "
                  f"{'-' if d is None else format(d, '.3f'):>10}")


if __name__ == "__main__":
    main()
