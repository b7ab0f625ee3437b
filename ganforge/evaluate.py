"""`ganforge evaluate`: score a generator (or one image set against another) and say how."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ganforge import data, io
from ganforge.errors import GanforgeError

MAX_REAL = 50_000
MAX_FAKE = 200_000


def _image_set(source: str, size: int = 0, channels: int = 0) -> data.Dataset:
    return data.resolve(source, size=size, channels=channels)


def evaluate_generator(ckpt: str, *, ref: str | None = None, n: int = 5000, n_real: int = 0,
                       metrics: tuple[str, ...] = ("fid", "kid", "pr"), truncation: float = 1.0,
                       seed: int = 0, device: str = "cpu", batch_size: int = 50,
                       progress: bool = True, prefer: str = "best", nearest: int = 0,
                       nearest_path: Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (or a run's best/latest) against real data."""
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
    ds = _image_set(ref or gen.config.data, gen.size, gen.channels)
    real, real_key = reference_subset(ds, min(n_real or MAX_REAL, MAX_REAL, len(ds)))
    extractor = FeatureExtractor(device=device, batch_size=batch_size, progress=progress)
    generate = generator_batches(gen.G, get_variant(gen.config.variant), gen.config, n, seed,
                                 gen.device, truncation)
    results = evaluate_images(generate, real, metrics=metrics, real_key=real_key, split=ds.split,
                              n_fake=n, extractor=extractor, progress=progress)
    results.update(checkpoint=str(gen.path), step=gen.step, reference=str(ds.meta["source"]),
                   truncation=truncation, ema=gen.ema)
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
                     device: str = "cpu", batch_size: int = 50,
                     progress: bool = True) -> dict[str, Any]:
    """Evaluate two image sets (folders or prepared dirs) against each other."""
    from ganforge.metrics import FeatureExtractor, evaluate_images

    real_ds = _image_set(real)
    fake_ds = _image_set(fake, real_ds.size, real_ds.channels)
    extractor = FeatureExtractor(device=device, batch_size=batch_size, progress=progress)
    results = evaluate_images(np.asarray(fake_ds.images), np.asarray(real_ds.images),
                              metrics=metrics, real_key=real_ds.key, split=real_ds.split,
                              extractor=extractor, progress=progress)
    results.update(real=real, fake=fake)
    return results


def evaluate_cli(args: argparse.Namespace) -> None:
    from ganforge.metrics import format_results

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.real or args.fake:
        if not (args.real and args.fake) or args.checkpoint:
            raise GanforgeError("give either a checkpoint/run, or both --real and --fake")
        results = evaluate_folders(args.real, args.fake, metrics=metrics, device=args.device,
                                   batch_size=args.batch_size, progress=not args.no_progress)
    else:
        if not args.checkpoint:
            raise GanforgeError("give a checkpoint or run directory (or --real and --fake)")
        run_dir = Path(args.checkpoint)
        if _evaluate_other_kind(args, run_dir):
            return
        results = evaluate_generator(
            args.checkpoint, ref=args.ref, n=args.n, n_real=args.n_real, metrics=metrics,
            truncation=args.truncation, seed=args.seed, device=args.device,
            batch_size=args.batch_size, progress=not args.no_progress,
            prefer="latest" if args.latest else "best", nearest=args.nearest,
            nearest_path=(run_dir / "nearest.png") if run_dir.is_dir() else Path("nearest.png"))
        if run_dir.is_dir():
            io.append_jsonl(run_dir / "evaluations.jsonl", results)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    where = results.get("checkpoint") or results.get("fake")
    print(f"{where}" + (f" (step {results['step']})" if "step" in results else ""))
    print(format_results(results))
    if "nearest_grid" in results:
        print(f"nearest training images: {results['nearest_grid']}")


def _evaluate_other_kind(args: argparse.Namespace, run_dir: Path) -> bool:
    """Conditional and translation checkpoints get their own scores; False for the rest."""
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
        return False
    results.update(checkpoint=str(gen.path), step=gen.step)
    if run_dir.is_dir():
        io.append_jsonl(run_dir / "evaluations.jsonl", results)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(f"{gen.path} (step {gen.step})")
        print(text)
    return True
