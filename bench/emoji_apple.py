"""A second public small colour set: Apple's emoji at 64 px, from the npm registry.

    python bench/emoji_apple.py                 # -> ~/.cache/ganforge/bench/emoji-apple (PNGs)
    python bench/emoji_apple.py --out /tmp/emoji

`npm pack emoji-datasource-apple@16.0.0` (about 100 MB, fetched once into the cache
directory, never committed), then every image of `img/apple/64/` (3,793: each emoji and its
skin-tone variants, flags among them) composited on white and written as a PNG. It is the
kind of folder issue 15 was filed on (about 3,800 colour 64x64 images): five times the
Pokémon sprites, with many near-duplicates (the skin tones) and flat, sharp-edged drawings.
Train on the folder with `ganforge train --data DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npmdata import build_folder, cache_dir, describe, main, on_white  # noqa: E402

PACKAGE = "emoji-datasource-apple@16.0.0"
IMAGES = "package/img/apple/64/"
SELECTION = describe(PACKAGE, IMAGES, ".png")


def build(out: Path) -> Path:
    """Write the emoji as PNGs into `out` (skipped when it is already complete)."""
    return build_folder(out, PACKAGE, IMAGES, ".png", on_white, "emoji")


if __name__ == "__main__":
    main(__doc__, cache_dir() / "emoji-apple", build, "emoji")
