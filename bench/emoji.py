"""A second public small colour set: Apple's emoji at 64 px, from the npm registry.

    python bench/emoji.py                       # -> ~/.cache/ganforge/bench/emoji-apple (PNGs)
    python bench/emoji.py --out /tmp/emoji

`npm pack emoji-datasource-apple@16.0.0` (about 100 MB, fetched once into the cache
directory, never committed), then every image of `img/apple/64/` (3,793: each emoji and its
skin-tone variants, flags among them) composited on white and written as a PNG. It is the
kind of folder issue 15 was filed on (about 3,800 colour 64x64 images): five times the
Pokémon sprites, with many near-duplicates (the skin tones) and flat, sharp-edged drawings.
Train on the folder with `ganforge train --data DIR`.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npmdata import cache_dir, npm_tarball  # noqa: E402

PACKAGE = "emoji-datasource-apple@16.0.0"
IMAGES = "package/img/apple/64/"


def on_white(img: Image.Image) -> Image.Image:
    """An (RGBA or palette) image composited on a white canvas of its size, as RGB."""
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def build(out: Path) -> Path:
    """Write the emoji as PNGs into `out` (skipped when it is already complete)."""
    done = out / ".complete"
    if done.exists():
        return out
    tgz = npm_tarball(PACKAGE, cache_dir())
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(tgz) as tar:
        for m in tar.getmembers():
            if not (m.isfile() and m.name.startswith(IMAGES) and m.name.endswith(".png")):
                continue
            f = tar.extractfile(m)
            assert f is not None
            with Image.open(io.BytesIO(f.read())) as img:
                on_white(img).save(out / Path(m.name).name)
            n += 1
    done.write_text(f"{n} emoji from {PACKAGE}\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=cache_dir() / "emoji-apple")
    args = ap.parse_args()
    out = build(args.out)
    print(f"{len(list(out.glob('*.png')))} emoji in {out}")


if __name__ == "__main__":
    main()
