"""`ganforge evaluate`: score a generator (or one image set against another) and say how."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganforge import data, io
from ganforge.errors import GanforgeError

MAX_REAL = 50_000
MAX_FAKE = 200_000


@dataclass
class ImageSet:
    """A set of images to score and what its figures call it."""

    images: np.ndarray  # uint8 [N, H, W, C]
    key: str  # content hash: the identity of its cached reference statistics
    name: str  # train, test, or the folder's name: the suffix of fid500_<name>
    source: str
    skipped: int = 0

    @property
    def resolution(self) -> str:
        return f"{self.images.shape[2]}x{self.images.shape[1]}"


def set_name(source: str, ds: data.Dataset | None = None, training_data: bool = False) -> str:
    """What a figure calls a real set: the split of a built-in dataset (train, test), `train`
    for a run's own training data, else the folder's (or file's) name: never a split it is
    not."""
    if ds is not None and ds.meta.get("source") == "fashion-mnist":
        return ds.split
    if training_data:
        return "train"
    name = re.sub(r"[^A-Za-z0-9]+", "-", Path(source).resolve().name).strip("-")
    return name or "images"


def load_image_set(source: str, size: int = 0, progress: bool = True) -> ImageSet:
    """A folder at its own resolution (size 0; one size per folder), or prepared to `size`
    (center crop, LANCZOS); a prepared directory, idx file or fashion-mnist as it is."""
    path = Path(source)
    if path.is_dir() and not (path / "meta.json").exists() and not size and not any(
            (path / n).exists() for pair in data.CACHE_FILES for n in pair.values()):
        images, skipped = data.read_native(path, progress=progress)
        for s in skipped[:20]:
            print(f"skipped {data._printable(s['path'])}: {s['reason']}", file=sys.stderr)
        key = hashlib.sha256(images.tobytes()).hexdigest()
        return ImageSet(images, key, set_name(source), source, len(skipped))
    ds = data.resolve(source, size=size, progress=progress)
    return ImageSet(np.asarray(ds.images), ds.key, set_name(source, ds), source,
                    len(ds.meta.get("skipped", [])))


def _classifier_for(source: str, size: int, channels: int, progress: bool
                    ) -> tuple[Any, data.Dataset]:
    """The cached small CNN of a labelled set (what --metrics cs scores with)."""
    from ganforge import data_cond
    from ganforge.classifier import cached_classifier

    try:
        ds = data_cond.resolve_labelled(source, size=size, channels=channels, progress=progress)
    except GanforgeError as e:
        raise GanforgeError(f"--metrics cs needs labelled reference data: {e}") from None
    model, _info = cached_classifier(ds.key, np.asarray(ds.images), np.asarray(ds.labels),
                                     len(ds.meta["classes"]), progress=progress)
    return model, ds


def _classifier_score(results: dict[str, Any], model: Any, ds: data.Dataset, name: str,
                      n: int) -> None:
    """The classifier's own score on as many real images as were generated: the ceiling."""
    from ganforge.classifier import logits
    from ganforge.metrics import inception_score
    from ganforge.metrics.training import reference_subset

    real, _ = reference_subset(ds, min(n, len(ds)))
    results.update(cs_real=inception_score(logits(model, real))[0], cs_n_real=len(real),
                   cs_classes=len(ds.meta["classes"]), cs_n_train=len(ds),
                   cs_trained_on=name)


def evaluate_generator(ckpt: str, *, ref: str | None = None, n: int = 5000, n_real: int = 0,
                       metrics: tuple[str, ...] = ("fid", "kid", "pr"), truncation: float = 1.0,
                       seed: int = 0, device: str = "cpu", batch_size: int = 50,
                       progress: bool = True, prefer: str = "best", nearest: int = 0,
                       nearest_path: Path | None = None,
                       inception_classifier: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (or a run's best/latest) against real data, at the generator's
    resolution (the reference images are prepared to it)."""
    from ganforge.classifier import logits
    from ganforge.metrics import (
        FeatureExtractor,
        evaluate_images,
        nearest_training_images,
        write_nearest_grid,
    )
    from ganforge.metrics.training import generator_batches, reference_subset
    from ganforge.sample import check_truncation, load_generator
    from ganforge.variants import get_variant

    if not 2 <= n <= MAX_FAKE:
        raise GanforgeError(f"--n must be between 2 and {MAX_FAKE:,}, got {n}")
    check_truncation(truncation)
    gen = load_generator(ckpt, device=device, prefer=prefer)
    source = ref or gen.config.data
    ds = data.resolve(source, size=gen.size, channels=gen.channels, progress=progress)
    name = set_name(source, ds, training_data=ref is None)
    real, real_key = reference_subset(ds, min(n_real or MAX_REAL, MAX_REAL, len(ds)))
    metrics = tuple(m.strip().lower() for m in metrics)
    needs_inception = any(m != "cs" for m in metrics)
    extractor = (FeatureExtractor(device=device, batch_size=batch_size, progress=progress,
                                  classifier=inception_classifier)
                 if needs_inception or nearest else None)
    generate = generator_batches(gen.G, get_variant(gen.config.variant), gen.config, n, seed,
                                 gen.device, truncation)
    clf = _classifier_for(source, gen.size, gen.channels, progress) if "cs" in metrics else None
    results = evaluate_images(generate, real, metrics=metrics, real_key=real_key, split=name,
                              n_fake=n, extractor=extractor, progress=progress,
                              classifier=(lambda x: logits(clf[0], x)) if clf else None)
    if clf:
        _classifier_score(results, *clf, name, n)
    results.update(checkpoint=str(gen.path), step=gen.step, reference=str(ds.meta["source"]),
                   truncation=truncation, ema=gen.ema,
                   resolution=f"{gen.size}x{gen.size}, the generator's: the reference images "
                   "were prepared to it (center crop, LANCZOS); to score image sets at their "
                   "own resolution use --real/--fake")
    if nearest:
        k = min(16, n)
        fake = generator_batches(gen.G, get_variant(gen.config.variant), gen.config, k, seed,
                                 gen.device, truncation)(k)
        fake_f = extractor.extract(fake, desc="nearest").features
        real_f = extractor.extract(real, desc="training set").features
        idx, dist = nearest_training_images(fake_f, real_f, nearest)
        path = nearest_path or Path("nearest.png")
        write_nearest_grid(path, fake, real, idx)
        results.update(nearest_grid=str(path),
                       nearest_distance_mean=float(np.mean(dist[:, 0])))
    return results


def evaluate_folders(real: str, fake: str, *, metrics: tuple[str, ...] = ("fid", "kid", "pr"),
                     size: int = 0, device: str = "cpu", batch_size: int = 50,
                     progress: bool = True, extractor: Any = None,
                     inception_classifier: str | None = None) -> dict[str, Any]:
    """Evaluate two image sets (folders or prepared dirs) against each other, each at its own
    resolution: nothing resizes the images before the Inception resize to 299x299 (`size`:
    both prepared to size x size first, and the results say so)."""
    from ganforge.classifier import logits
    from ganforge.metrics import FeatureExtractor, evaluate_images

    if size:
        data.check_prepare_args(size, 0, 1.0)
    real_set = load_image_set(real, size, progress)
    fake_set = load_image_set(fake, size, progress)
    clf = None
    metrics = tuple(m.strip().lower() for m in metrics)
    if "cs" in metrics:
        # the real set as read above: a labelled folder at its own size, the rest as they are
        folder = Path(real).is_dir() and not (Path(real) / "meta.json").exists()
        model, ds = _classifier_for(real, size or (real_set.images.shape[1] if folder else 0),
                                    0, progress)
        if fake_set.images.shape[1:] != ds.images.shape[1:]:
            h, w, c = ds.images.shape[1:]
            raise GanforgeError(f"--metrics cs: the classifier was trained on the {w}x{h} "
                                f"images ({c} channel(s)) of {real}, but {fake} holds "
                                f"{fake_set.resolution} images with {fake_set.images.shape[3]} "
                                "channel(s); give --size to score both at one size")
        clf = (model, ds)
    if extractor is None and any(m != "cs" for m in metrics):
        extractor = FeatureExtractor(device=device, batch_size=batch_size, progress=progress,
                                     classifier=inception_classifier)
    results = evaluate_images(fake_set.images, real_set.images, metrics=metrics,
                              real_key=real_set.key, split=real_set.name, extractor=extractor,
                              progress=progress,
                              classifier=(lambda x: logits(clf[0], x)) if clf else None)
    if clf:
        _classifier_score(results, *clf, real_set.name, len(fake_set.images))
    how = (f"both prepared to {size}x{size} (center crop, LANCZOS) as --size asked" if size else
           "each set at its own resolution, nothing resized before the Inception resize to "
           "299x299")
    results.update(real=real, fake=fake, real_resolution=real_set.resolution,
                   fake_resolution=fake_set.resolution, resolution=how,
                   skipped_real=real_set.skipped, skipped_fake=fake_set.skipped)
    return results


def evaluate_cli(args: argparse.Namespace) -> None:
    """`ganforge evaluate`: the results on stdout (one JSON document with --json); progress,
    prepare reports and notes on stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        results, text = _evaluate(args)
    print(json.dumps(results, indent=2, sort_keys=True) if args.json else text)


def _evaluate(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from ganforge.metrics import format_results

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.real or args.fake:
        if not (args.real and args.fake) or args.checkpoint:
            raise GanforgeError("give either a checkpoint/run, or both --real and --fake")
        results = evaluate_folders(args.real, args.fake, metrics=metrics, size=args.size or 0,
                                   device=args.device, batch_size=args.batch_size,
                                   progress=not args.no_progress,
                                   inception_classifier=args.inception_classifier)
        return results, "\n".join([f"{args.fake} vs {args.real}", format_results(results),
                                   f"resolution: {results['resolution']} (real "
                                   f"{results['real_resolution']}, generated "
                                   f"{results['fake_resolution']})"])
    if not args.checkpoint:
        raise GanforgeError("give a checkpoint or run directory (or --real and --fake)")
    if args.size:
        raise GanforgeError("--size is for --real/--fake image sets; a generator is scored at "
                            "its own resolution")
    run_dir = Path(args.checkpoint)
    other = _evaluate_other_kind(args, run_dir)
    if other is not None:
        return other
    results = evaluate_generator(
        args.checkpoint, ref=args.ref, n=args.n, n_real=args.n_real, metrics=metrics,
        truncation=args.truncation, seed=args.seed, device=args.device,
        batch_size=args.batch_size, progress=not args.no_progress,
        prefer="latest" if args.latest else "best", nearest=args.nearest,
        nearest_path=(run_dir / "nearest.png") if run_dir.is_dir() else Path("nearest.png"),
        inception_classifier=args.inception_classifier)
    if run_dir.is_dir():
        io.append_jsonl(run_dir / "evaluations.jsonl", results)
    lines = [f"{results['checkpoint']} (step {results['step']})", format_results(results),
             f"resolution: {results['resolution']}"]
    if "nearest_grid" in results:
        lines.append(f"nearest training images: {results['nearest_grid']}")
    return results, "\n".join(lines)


def _evaluate_other_kind(args: argparse.Namespace, run_dir: Path
                         ) -> tuple[dict[str, Any], str] | None:
    """Conditional and translation checkpoints get their own scores; None for the rest."""
    from ganforge import evaluate_cond as ec
    from ganforge.sample import load_generator

    gen = load_generator(args.checkpoint, device=args.device,
                         prefer="latest" if args.latest else "best")
    if gen.kind == "conditional":
        results = ec.evaluate_conditional(
            gen, ref=args.ref, n_per_class=args.n_per_class, fid=not args.no_fid,
            seed=args.seed, truncation=args.truncation, device=args.device,
            progress=not args.no_progress)
        text = ec.format_conditional(results)
    elif gen.kind == "translation":
        results = ec.evaluate_translation(gen, ref=args.ref, n=args.n, direction=args.direction,
                                          device=args.device, progress=not args.no_progress)
        text = ec.format_translation(results)
    else:
        return None
    results.update(checkpoint=str(gen.path), step=gen.step)
    if run_dir.is_dir():
        io.append_jsonl(run_dir / "evaluations.jsonl", results)
    return results, f"{gen.path} (step {gen.step})\n{text}"
