"""The `ganforge` command line: prepare | train | sample | interpolate | translate | evaluate |
serve.

User mistakes become one line on stderr and exit status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ganforge.errors import GanforgeError

EPILOG = {
    "prepare": """examples:
  ganforge prepare fashion-mnist --out data/fmnist
  ganforge prepare fashion-mnist:test --out data/fmnist-test
  ganforge prepare ~/photos/faces --out data/faces --size 64 --crop 0.5 --per-folder 2 --limit 2000
  ganforge prepare ~/sprites-by-class --labelled --out data/sprites   # one sub-folder per class
  ganforge prepare ~/facades --paired --out data/facades    # DIR/A + DIR/B, or side-by-side AB
  ganforge prepare fashion-mnist-edges --out data/edges     # built-in pairs: edges -> item
""",
    "train": """examples:
  ganforge train --preset fast --minutes 5 --out runs/fast
  ganforge train --data data/faces --variant wgan-gp --steps 20000 --out runs/faces
  ganforge train --data ~/sprites --variant sngan --set batch_size=128 --set ema=0.999 --out runs/s
  ganforge train --out runs/faces --resume --steps 40000
  ganforge train --variant cgan --data fashion-mnist --steps 5000 --out runs/cgan
  ganforge train --variant pix2pix --data fashion-mnist-edges --out runs/p2p
  ganforge train --variant cyclegan --data photos/summer --data-b photos/winter --out runs/cyc
""",
    "sample": """examples:
  ganforge sample runs/faces --n 64 --grid grid.png
  ganforge sample runs/faces/checkpoints/latest.safetensors --n 100 --out samples/ --seed 7
  ganforge sample runs/cgan --class Sneaker --n 16 --grid sneakers.png
  ganforge sample runs/cgan --n 80 --grid by-class.png     # one row per class
  ganforge sample runs/cgan-text --prompt "a running shoe" --n 16 --grid shoes.png
""",
    "translate": """examples:
  ganforge translate runs/p2p --in edges/ --out translated/
  ganforge translate runs/cyc --in winter.jpg --out out/ --direction b2a
""",
    "interpolate": """examples:
  ganforge interpolate runs/faces --seeds 1 2 --frames 24 --out walk.gif
""",
    "evaluate": """examples:
  ganforge evaluate runs/faces --ref data/faces --n 5000
  ganforge evaluate runs/fmnist --ref fashion-mnist:test --n 10000 --metrics fid,kid,pr --json
  ganforge evaluate runs/fmnist --ref fashion-mnist --n 2000 --nearest 3
  ganforge evaluate --real data/fmnist-test --fake samples/   # each set at its own size
  ganforge evaluate runs/fmnist --ref fashion-mnist:test --metrics fid,cs
  ganforge evaluate runs/cgan --n-per-class 100      # classifier accuracy + per-class FID
  ganforge evaluate runs/p2p --n 500                 # FID, L1 and PSNR on the test pairs
Every figure is printed with its protocol name (fid5k_test = 5,000 generated vs the test
split), the number of real images and the Inception protocol.
""",
    "serve": """examples:
  ganforge serve runs/faces                 # then open http://127.0.0.1:8666
  ganforge serve runs/faces --port 9000
""",
}


def _add_common_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None, help="image size in pixels")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="1 (gray) or 3 (RGB)")
    p.add_argument("--crop", type=float, default=None,
                   help="center-crop fraction before resizing (faces: 0.5)")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    from ganforge.config import PRESETS, describe_options
    from ganforge.variants import REGISTRY

    parser = argparse.ArgumentParser(
        prog="ganforge", description="Train GANs on your own images, measure them honestly, "
        "and explore what the generator learned.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, epilog: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=epilog or EPILOG.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = cmd("prepare", "turn images on disk into a compact uint8 cache (decoded once)")
    p.add_argument("source", help="image folder, MNIST idx file, or fashion-mnist[:train|:test]")
    p.add_argument("--out", required=True, help="data directory to write")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--labelled", action="store_true",
                      help="a labelled folder: one sub-folder per class (for cgan)")
    kind.add_argument("--paired", action="store_true",
                      help="paired images: DIR/A and DIR/B with matching names, or side-by-side "
                      "AB images (for pix2pix)")
    _add_common_data_args(p)
    p.add_argument("--limit", type=int, default=0, help="use at most N images (0 = all)")
    p.add_argument("--per-folder", type=int, default=0,
                   help="use at most K images per folder (0 = all), e.g. 2 per person")
    p.add_argument("--mirror", action="store_true",
                   help="add every image's horizontal mirror image (twice the images; for "
                   "faces, sprites, products - not for text)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    variants = "\n".join(f"  {v.name:8s} {v.description}" for v in REGISTRY.values())
    p = cmd("train", "train a GAN (or resume a run)",
            EPILOG["train"] + f"\nvariants:\n{variants}\n\npresets: {', '.join(PRESETS)}\n\n"
            f"config keys (--set KEY=VALUE, or a JSON/TOML --config file):\n{describe_options()}")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--data", help="prepared data dir, image folder, idx file or fashion-mnist")
    p.add_argument("--data-b", dest="data_b", help="cyclegan: the second domain's images")
    p.add_argument("--variant", help=f"one of {', '.join(REGISTRY)}")
    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--config", help="JSON or TOML file of config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--steps", type=int, help="generator steps in total (resume continues to it)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    _add_common_data_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = cmd("sample", "write N generated images (PNG files and/or a grid)")
    p.add_argument("checkpoint", help="checkpoint file or run directory (uses its best)")
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--out", help="folder for sample-XXXXX.png files")
    p.add_argument("--grid", help="write one grid PNG here")
    p.add_argument("--seed", type=int, default=0, help="same seed, same images")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="psi in (0, 1]: scale latents toward the origin (1 = off)")
    p.add_argument("--latest", action="store_true", help="use the latest, not the best, checkpoint")
    p.add_argument("--class", dest="class_", metavar="K",
                   help="conditional models: the class (name or index); default: one row per "
                   "class")
    p.add_argument("--prompt", metavar="TEXT",
                   help="text-conditioned cgan (condition=text): describe the image, any "
                   "phrasing (needs ganforge[text])")
    _add_device_arg(p)

    p = cmd("translate", "translate image files or folders with a pix2pix / CycleGAN model")
    p.add_argument("checkpoint", help="checkpoint file or run directory (uses its best)")
    p.add_argument("--in", dest="inputs", required=True, help="an image file or a folder")
    p.add_argument("--out", required=True, help="folder for the translated PNGs")
    p.add_argument("--direction", default="a2b", choices=("a2b", "b2a"),
                   help="a2b (default) or, for CycleGAN, b2a")
    p.add_argument("--latest", action="store_true", help="use the latest, not the best, checkpoint")
    _add_device_arg(p)

    p = cmd("interpolate", "an animated walk between two latent points (GIF) or a grid")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--seeds", type=int, nargs=2, default=(0, 1), metavar=("A", "B"))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--linear", action="store_true", help="straight line instead of slerp")
    p.add_argument("--out", required=True, help="a .gif (animation) or .png (grid) file")
    _add_device_arg(p)

    p = cmd("evaluate", "FID / KID / IS / precision-recall of a generator (or two image sets)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory")
    p.add_argument("--ref", help="real data: prepared dir, folder, or fashion-mnist[:test] "
                   "(default: the run's training data)")
    p.add_argument("--n", type=int, default=5000, help="generated images (default 5000)")
    p.add_argument("--n-real", type=int, default=0,
                   help="real images (default: all of --ref, at most 50,000)")
    p.add_argument("--metrics", default="fid,kid,pr",
                   help="comma list of fid, kid, pr, cs (classifier score of a small CNN "
                   "trained on labelled reference data), is (needs --inception-classifier)")
    p.add_argument("--real", help="with --fake: evaluate two image folders/caches directly, "
                   "each at its own resolution")
    p.add_argument("--fake", help="generated images: folder or prepared dir")
    p.add_argument("--size", type=int, default=None,
                   help="with --real/--fake: prepare both sets to SIZExSIZE first (center "
                   "crop, LANCZOS), e.g. for folders of mixed sizes")
    p.add_argument("--inception-classifier", metavar="FILE",
                   help="a local pytorch-fid pt_inception-2015-12-05-6726825d.pth: enables "
                   "--metrics is (never downloaded)")
    p.add_argument("--nearest", type=int, default=0, metavar="K",
                   help="also write nearest.png: 16 samples beside their K nearest training "
                   "images (memorisation check)")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--n-per-class", type=int, default=100,
                   help="conditional models: generated images per class (default 100)")
    p.add_argument("--no-fid", action="store_true",
                   help="conditional models: classifier accuracy only, no per-class FID")
    p.add_argument("--direction", default="a2b", choices=("a2b", "b2a"),
                   help="translation models: which direction to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=50)
    _add_device_arg(p)
    p.add_argument("--latest", action="store_true", help="the latest, not the best, checkpoint")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-progress", action="store_true")

    p = cmd("serve", "explore a trained generator and watch its run in the browser")
    p.add_argument("checkpoint", help="checkpoint file or run directory (uses its best)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8666)
    _add_device_arg(p)
    return parser


def preset_for_variant(preset: dict[str, Any], name: str, variant_name: str,
                        say: bool) -> dict[str, Any]:
    """A preset given with another --variant: the DCGAN-family network options it sets that
    the variant's networks do not read are left out, with a note, rather than refused."""
    from ganforge.variants import get_variant
    from ganforge.variants.base import DCGAN_NET_KEYS

    variant = get_variant(variant_name)
    dropped = [k for k in DCGAN_NET_KEYS if k in preset and k not in variant.net_keys]
    if dropped and say:
        print(f"note: {variant.name} does not read the `{name}` preset's "
              f"{', '.join(dropped)}; training without", flush=True)
    return {k: v for k, v in preset.items() if k not in dropped}


def _train(args: argparse.Namespace) -> None:
    from ganforge import config as C
    from ganforge.train import train

    layers: list[dict[str, Any]] = []
    if args.preset:
        if args.preset not in C.PRESETS:
            raise GanforgeError(f"unknown preset {args.preset!r}; choose one of "
                                f"{', '.join(C.PRESETS)}")
        layers.append(dict(C.PRESETS[args.preset]))
    explicit: dict[str, Any] = {}
    if args.config:
        explicit.update(C.load_config_file(args.config))
    for key in ("data", "data_b", "variant", "steps", "minutes", "seed", "device", "size",
                "channels", "crop"):
        value = getattr(args, key)
        if value is not None:
            explicit[key] = C.coerce(key, value)
    explicit.update(C.parse_overrides(args.set))
    if "minutes" in explicit and "steps" not in explicit:
        explicit["steps"] = C.UNTIL_CLOCK  # --minutes alone: the clock decides
    main_rank = os.environ.get("RANK", "0") == "0"
    if args.preset and "variant" in explicit:
        layers[0] = preset_for_variant(layers[0], args.preset, explicit["variant"], main_rank)
    layers.append(explicit)
    if args.resume:
        cfg = None  # rebuilt from the run's checkpoint
    else:
        if not args.preset and "variant" not in explicit:
            recipe = _recipe(C.build_config(layers), progress=not args.no_progress)
            layers.insert(0, {**recipe.overrides, "recipe": recipe.line()[len("recipe: "):]})
            if main_rank:
                print(recipe.line(), flush=True)
        cfg = C.build_config(layers)
    result = train(cfg, args.out, resume=args.resume, overrides=explicit,
                   progress=not args.no_progress)
    if not main_rank:
        return  # under torchrun only rank 0 reports
    out = Path(args.out)
    grids = sorted((out / "samples").glob("step-*.png"))
    best = out / "checkpoints" / "best.safetensors"
    print(f"trained to step {result.step}; run directory: {out}")
    if result.last_log:
        r = result.last_log
        print(f"last log: loss_D={r.get('loss_D', float('nan')):.4f} "
              f"loss_G={r.get('loss_G', float('nan')):.4f} images/s={r['images_per_s']:.0f}")
    if grids:
        print(f"sample grid:  {grids[-1]}")
    print(f"curves:       {out / 'plots'}")
    print(f"checkpoint:   {result.checkpoint}" + (f" (best by FID: {best})" if best.exists()
                                                   else ""))
    print(f"next:         ganforge serve {out}                  # explore it in the browser\n"
          f"              ganforge sample {out} --n 64 --grid grid.png\n"
          f"              ganforge evaluate {out} --n 5000      # FID/KID against the data\n"
          f"              ganforge train --out {out} --resume --minutes 30   # train on")


def _recipe(base: Any, progress: bool) -> Any:
    """The recipe for the data `base.data` (prepared now, cached for the run) on the device."""
    from ganforge import data
    from ganforge.devices import pick_device
    from ganforge.recipes import choose

    ds = data.resolve(base.data, size=base.size, channels=base.channels, crop=base.crop,
                      progress=progress, mirror=base.mirror)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's process count
    return choose(len(ds), ds.size, ds.channels, str(pick_device(base.device)), world)


def _prepare(args: argparse.Namespace) -> None:
    from ganforge import data, data_cond

    common = dict(size=args.size or 0, channels=args.channels or 0,
                  crop=args.crop if args.crop is not None else 1.0, progress=not args.no_progress)
    if args.paired or args.source.split(":")[0] == data_cond.EDGES:
        if args.mirror:
            raise GanforgeError("--mirror is for image folders and labelled folders, not pairs")
        pairs = data_cond.prepare_paired(args.source, args.out, limit=args.limit, **common)
        print(data_cond.describe_paired(pairs))
        return
    if args.labelled:
        ds = data_cond.prepare_labelled(args.source, args.out, limit=args.limit,
                                        per_folder=args.per_folder, mirror=args.mirror,
                                        **common)
    else:
        ds = data.prepare(args.source, args.out, limit=args.limit, per_folder=args.per_folder,
                          mirror=args.mirror, **common)
    print(data.describe(ds))


def _sample(args: argparse.Namespace) -> None:
    from ganforge.sample import load_generator, write_samples

    if not args.out and not args.grid:
        raise GanforgeError("give --out DIR (PNG files) and/or --grid FILE")
    gen = load_generator(args.checkpoint, device=args.device,
                         prefer="latest" if args.latest else "best")
    images = write_samples(gen, args.n, args.out, seed=args.seed, truncation=args.truncation,
                           grid=args.grid, class_=args.class_, prompt=args.prompt)
    where = " and ".join(x for x in (args.out and f"{args.out}/", args.grid) if x)
    which = ""
    if args.prompt is not None:
        which = f" for the prompt {args.prompt.strip()!r}"
    elif gen.kind == "conditional":
        which = (f" of class {gen.classes[gen.class_index(args.class_)]!r}"
                 if args.class_ is not None else f", one row per class ({len(gen.classes)})")
    print(f"wrote {len(images)} samples{which} from {gen.path} (step {gen.step}) to {where}")


def _translate(args: argparse.Namespace) -> None:
    from ganforge.data import _printable
    from ganforge.sample import load_generator
    from ganforge.translate import translate_files

    gen = load_generator(args.checkpoint, device=args.device,
                         prefer="latest" if args.latest else "best")
    report = translate_files(gen, args.inputs, args.out, args.direction)
    print(f"translated {len(report.written)} images ({args.direction}, {gen.size}x{gen.size} "
          f"{'gray' if gen.channels == 1 else 'RGB'}) with {gen.path} (step {gen.step}) into "
          f"{args.out}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} files:")
        for name, why in report.skipped[:20]:
            print(f"  {_printable(name)}: {why}")
    if not report.written:
        raise GanforgeError(f"none of the files under {args.inputs} could be translated")


def _interpolate(args: argparse.Namespace) -> None:
    from ganforge import io
    from ganforge.sample import gif_bytes, interpolation_frames, load_generator, save_grid

    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".png"):
        raise GanforgeError(f"--out must end in .gif or .png, got {out.name}")
    gen = load_generator(args.checkpoint, device=args.device)
    frames = interpolation_frames(gen, *args.seeds, frames=args.frames,
                                  truncation=args.truncation, spherical=not args.linear)
    if out.suffix.lower() == ".gif":
        io.write_bytes(out, gif_bytes(frames, upscale=max(1, 128 // gen.size)))
    else:
        save_grid(out, frames, nrow=len(frames))
    print(f"wrote {len(frames)} frames to {out}")


def _evaluate(args: argparse.Namespace) -> None:
    from ganforge.evaluate import evaluate_cli

    evaluate_cli(args)


def _serve(args: argparse.Namespace) -> None:
    from ganforge.serve import run_server

    run_server(args.checkpoint, host=args.host, port=args.port, device=args.device)


COMMANDS = {"prepare": _prepare, "train": _train, "sample": _sample,
            "interpolate": _interpolate, "translate": _translate, "evaluate": _evaluate,
            "serve": _serve}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command != "train" and getattr(args, "device", None):
            from ganforge.devices import pick_device

            args.device = str(pick_device(args.device))  # `auto` -> cuda or cpu
        COMMANDS[args.command](args)
    except GanforgeError as e:
        print(f"ganforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nganforge {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
