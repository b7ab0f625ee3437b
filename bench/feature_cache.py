"""The `--cache FILE.npz` of the bench scripts that score images with Inception
(d_selection.py, fid_floor.py): the features of a set of images, stored with a key that names
that set, so a rerun on the same images skips the slow extraction.

    path = cache_file(args.cache)        # checked before any work
    feats = load(path, key)              # None: no file yet, or another set of images
    ...
    save(path, feats, key)               # atomic: a killed run leaves the old file or none
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ganforge import io
from ganforge.errors import GanforgeError


def cache_file(path: Path | None) -> Path | None:
    """--cache as the file it will be (.npz added when missing), its folder checked now, so a
    typo fails before minutes of work rather than after."""
    if path is None:
        return None
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise GanforgeError(f"--cache: no folder {path.parent}")
    return path


def load(path: Path | None, key: str) -> np.ndarray | None:
    """The cached features when the file holds the images `key` names, else None (the caller
    then extracts them and `save` replaces the file: one set of images per file). A file
    that is no cache this version can read is an error, never overwritten."""
    if path is None or not path.exists():
        return None
    try:
        z = np.load(path)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with z:
            feats, cached = z["features"], str(z["key"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise GanforgeError(f"--cache {path}: not a cache this version can read (an older "
                            f"format, a torn write or another program's file: {e}); delete "
                            "it or choose another --cache") from None
    return feats if cached == key else None


def save(path: Path | None, features: np.ndarray, key: str) -> None:
    if path is not None:
        with io.atomic_open(path) as f:
            np.savez(f, features=features, key=np.array(key))
