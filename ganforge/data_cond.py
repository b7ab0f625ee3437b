"""Data for conditional and image-to-image models: labelled folders, paired and unpaired sets.

Builds on ganforge.data (its decoding, reporting and atomic cache writing):

* a **labelled folder** (one sub-folder per class, class names from the folder names) becomes
  one ordinary cache with `labels.npy` and the class names in `meta.json`;
* a **paired set** (pix2pix) becomes a directory holding two ordinary caches, `A/` (the
  condition) and `B/` (the target), row i of one paired with row i of the other, and
  `pairs.json`, written last, which names both caches' content hashes: a directory whose two
  halves do not match it is an unfinished prepare and is never used. Sources: `DIR/A` + `DIR/B`
  with matching file names, a folder of side-by-side AB images, or the built-in
  `fashion-mnist-edges[:train|:test]` (Sobel edge maps -> Fashion-MNIST items, no download);
* an **unpaired set** (CycleGAN) is simply two ordinary image sets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ganforge import data, io
from ganforge.errors import GanforgeError

EDGES = "fashion-mnist-edges"


@dataclass
class TrainData:
    """What a variant trains on. `parts`: one dict of arrays per independently shuffled set
    (uint8 images [N, H, W, C] and int64 labels [N]); `ref`: the images its outputs should
    look like (the FID reference); `key`: the content identity of everything used."""

    parts: list[dict[str, np.ndarray]]
    size: int
    channels: int
    key: str
    split: str
    ref: data.Dataset
    classes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _base_meta(source: str, split: str, images: np.ndarray, files_seen: int,
               skipped: list[dict[str, str]], crop: float) -> dict[str, Any]:
    return {"version": data.CACHE_VERSION, "source": source, "split": split,
            "count": int(images.shape[0]), "files_seen": int(files_seen), "skipped": skipped,
            "size": int(images.shape[1]), "channels": int(images.shape[3]), "crop": crop,
            "limit": 0, "per_folder": 0,
            "content_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
            "has_labels": False}


def _cached(ident: str) -> Path:
    key = hashlib.sha256(f"v{data.CACHE_VERSION}|{ident}".encode()).hexdigest()[:16]
    return data.cache_root() / "data" / key


def _listing(path: Path) -> list[tuple[str, int, int]]:
    return [(str(p), *data._size_mtime(p)) for p in data.list_images(path)]


# ----------------------------------------------------------------------------------------------
# labelled folders


def _cap_per_class(files: dict[str, list[Path]], limit: int) -> dict[str, list[Path]]:
    """At most `limit` files in all, taken from the classes in turn (file 0 of every class,
    then file 1, ...), so every class keeps as many as the others where it can."""
    if not limit:
        return files
    if limit < len(files):
        raise GanforgeError(f"--limit {limit} is less than the number of classes "
                            f"({len(files)}); every class needs at least one image")
    kept: dict[str, list[Path]] = {name: [] for name in files}
    taken, depth = 0, 0
    while taken < limit:
        added = False
        for name, fs in files.items():
            if depth < len(fs) and taken < limit:
                kept[name].append(fs[depth])
                taken, added = taken + 1, True
        if not added:
            break
        depth += 1
    return kept


def prepare_labelled(folder: str | Path, out: str | Path, *, size: int = 0, channels: int = 0,
                     crop: float = 1.0, limit: int = 0, per_folder: int = 0,
                     progress: bool = True, mirror: bool = False) -> data.Dataset:
    """A folder with one sub-folder per class -> a cache with labels and class names
    (`mirror`: and every image's mirror image, with its label).

    `per_folder`: at most K images from each folder (a class folder, or each folder inside
    it, e.g. one per person); `limit`: at most N images in all, balanced across classes."""
    data.check_prepare_args(size, channels, crop)
    if limit < 0 or per_folder < 0:
        raise GanforgeError("--limit and --per-folder must be >= 0")
    root = Path(folder)
    if not root.is_dir():
        raise GanforgeError(f"labelled data folder not found: {folder}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise GanforgeError(f"{folder} needs one sub-folder per class (at least 2); found "
                            f"{len(class_dirs)}")
    files = {d.name: data.list_images(d, per_folder) for d in class_dirs}
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise GanforgeError(f"class folder(s) with no images under {folder}: "
                            f"{', '.join(data._printable(n) for n in empty)}; add images or "
                            "remove the folder")
    size = size or 64
    files = _cap_per_class(files, limit)
    every = [p for fs in files.values() for p in fs]
    if not channels:
        channels = 1 if all(data._gray_image(p) for p in every[:200]) else 3
    skipped = [{"path": str(p.relative_to(root)), "reason": "not inside a class folder"}
               for p in data.list_images(root) if p.parent == root]
    arrays, labels = [], []
    for k, (name, fs) in enumerate(files.items()):
        used, bad = data.decode_files(fs, root, channels, size, crop, progress,
                                      desc=f"prepare {name}")
        arrays += used
        labels += [k] * len(used)
        skipped += bad
        if not used:
            raise GanforgeError(f"none of the {len(fs)} images of class "
                                f"{data._printable(name)!r} could be used (first problem: "
                                f"{skipped[-1]['path']}: {skipped[-1]['reason']})")
    images = np.ascontiguousarray(np.stack(arrays), dtype=np.uint8)
    label_array = np.asarray(labels, dtype=np.int64)
    if mirror:
        images, label_array = data.mirror_images(images, label_array)
    meta = _base_meta(str(root.resolve()), "train", images, len(every) + sum(
        1 for s in skipped if s["reason"] == "not inside a class folder"), skipped, crop)
    meta.update(has_labels=True, classes=[d.name for d in class_dirs], limit=limit,
                per_folder=per_folder, mirror=mirror)
    data._write_cache(Path(out), images, label_array, meta)
    return data.load_dataset(out)


def resolve_labelled(source: str, *, size: int = 0, channels: int = 0, crop: float = 1.0,
                     progress: bool = True, mirror: bool = False) -> data.Dataset:
    """What `train --variant cgan --data` accepts: fashion-mnist, a prepared labelled
    directory, or a labelled folder (prepared on the fly, cached)."""
    path = Path(source)
    if source.split(":")[0] == "fashion-mnist" or (path / "meta.json").exists():
        ds = data.resolve(source, size=size, channels=channels, crop=crop, progress=progress,
                          mirror=mirror)
    elif path.is_dir():
        ident = json.dumps(["labelled", str(path.resolve()), size, channels, crop,
                            _listing(path)] + (["mirror"] if mirror else []))
        cached = _cached(ident)
        try:
            return data.load_dataset(cached)
        except GanforgeError:
            ds = prepare_labelled(path, cached, size=size, channels=channels, crop=crop,
                                  progress=progress, mirror=mirror)
            print(data.describe(ds))
    else:
        raise GanforgeError(f"data source not found: {source}")
    if ds.labels is None or not ds.meta.get("classes"):
        raise GanforgeError(f"{source} has no class labels; a conditional model needs a "
                            "labelled folder (one sub-folder per class) or fashion-mnist")
    return ds


# ----------------------------------------------------------------------------------------------
# paired sets


@dataclass
class Paired:
    """A prepared paired set: A (condition) row i is paired with B (target) row i."""

    path: Path
    a: data.Dataset
    b: data.Dataset
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        return self.meta["content_sha256"]


def sobel_edges(images: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """uint8 [N, H, W, 1] -> binary edge maps uint8 [N, H, W, 1] (0 or 255): the Sobel
    gradient magnitude above `threshold` times each image's largest magnitude."""
    x = images[..., 0].astype(np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]
          - p[:, :-2, :-2] - 2 * p[:, 1:-1, :-2] - p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]
          - p[:, :-2, :-2] - 2 * p[:, :-2, 1:-1] - p[:, :-2, 2:])
    mag = np.sqrt(gx * gx + gy * gy)
    peak = np.maximum(mag.reshape(len(mag), -1).max(1), 1e-6)[:, None, None]
    return ((mag > threshold * peak) * 255).astype(np.uint8)[..., None]


def _pair_key(p: Path, root: Path) -> str:
    return str(p.relative_to(root).with_suffix(""))


def _split_side_by_side(path: Path, channels: int, size: int,
                        crop: float) -> tuple[np.ndarray, np.ndarray]:
    """One side-by-side AB image -> (A, B) arrays; ValueError (a skip reason) on problems."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > data.MAX_PIXELS:
                raise data._Skip(f"too large ({w}x{h} pixels)")
            if w < 4 or abs(w - 2 * h) > max(2, h // 10):
                raise data._Skip(f"not a side-by-side pair ({w}x{h}; expected width = 2 x "
                                 "height)")
            img.load()
            img = data._upright(img)
            half = img.size[0] // 2
            a = img.crop((0, 0, half, img.size[1]))
            b = img.crop((half, 0, 2 * half, img.size[1]))
            return (data._to_array(a, channels, size, crop),
                    data._to_array(b, channels, size, crop))
    except data._Skip:
        raise
    except Exception as e:  # noqa: BLE001 - one bad file must never stop a run
        raise data._Skip(f"unreadable ({type(e).__name__}: {e})") from None


def _pairs_from_folders(root: Path, channels: int, size: int, crop: float, progress: bool
                        ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, str]], int]:
    dir_a, dir_b = root / "A", root / "B"
    skipped: list[dict[str, str]] = []
    names: dict[str, dict[str, Path]] = {"A": {}, "B": {}}
    for side, d in (("A", dir_a), ("B", dir_b)):
        for p in data.list_images(d):
            key = _pair_key(p, d)
            if key in names[side]:
                skipped.append({"path": str(p.relative_to(root)),
                                "reason": f"another file in {side} has the same name"})
            else:
                names[side][key] = p
    for side, other in (("A", "B"), ("B", "A")):
        for key, p in names[side].items():
            if key not in names[other]:
                skipped.append({"path": str(p.relative_to(root)),
                                "reason": f"no partner in {other} (expected {other}/{key}.*)"})
    common = sorted(set(names["A"]) & set(names["B"]))
    if not channels:
        sample = [names[s][k] for k in common[:100] for s in ("A", "B")]
        channels = 1 if all(data._gray_image(p) for p in sample) else 3
    arr_a, arr_b = [], []
    for key in tqdm(common, desc="prepare pairs", unit="pair", disable=not progress):
        try:
            a = data._load_image(names["A"][key], channels, size, crop)
        except ValueError as e:
            skipped.append({"path": f"A/{key}", "reason": str(e)})
            continue
        try:
            b = data._load_image(names["B"][key], channels, size, crop)
        except ValueError as e:
            skipped.append({"path": f"B/{key}", "reason": str(e)})
            continue
        arr_a.append(a)
        arr_b.append(b)
    return arr_a, arr_b, skipped, len(names["A"]) + len(names["B"])


def prepare_paired(source: str, out: str | Path, *, size: int = 0, channels: int = 0,
                   crop: float = 1.0, limit: int = 0, progress: bool = True) -> Paired:
    """Prepare a paired set (see the module docstring) into `out`."""
    data.check_prepare_args(size, channels, crop)
    out = Path(out)
    skipped: list[dict[str, str]] = []
    split = "train"
    if source.split(":")[0] == EDGES:
        split = source.split(":", 1)[1] if ":" in source else "train"
        fm = data.prepare(f"fashion-mnist:{split}", out / "B", size=size, channels=1, crop=crop,
                          limit=limit, progress=progress)
        images_b = np.asarray(fm.images)
        images_a = sobel_edges(images_b)
        name, seen = source, len(images_b)
    else:
        root = Path(source)
        if not root.is_dir():
            raise GanforgeError(f"paired data folder not found: {source}")
        size = size or 64
        if (root / "A").is_dir() and (root / "B").is_dir():
            arr_a, arr_b, skipped, seen = _pairs_from_folders(root, channels, size, crop,
                                                              progress)
        elif (root / "A").is_dir() or (root / "B").is_dir():
            raise GanforgeError(f"{source} has only one of the folders A and B; paired data "
                                "needs both (A: inputs, B: targets, matching file names)")
        else:
            files = data.list_images(root, limit=limit)
            if not channels:
                channels = 1 if all(data._gray_image(p) for p in files[:200]) else 3
            arr_a, arr_b = [], []
            for p in tqdm(files, desc="prepare pairs", unit="img", disable=not progress):
                try:
                    a, b = _split_side_by_side(p, channels, size, crop)
                except ValueError as e:
                    skipped.append({"path": str(p.relative_to(root)), "reason": str(e)})
                    continue
                arr_a.append(a)
                arr_b.append(b)
            seen = len(files)
        if not arr_a:
            first = f" (first problem: {skipped[0]['path']}: {skipped[0]['reason']})" \
                if skipped else ""
            raise GanforgeError(f"no usable image pairs under {source}: give DIR/A and DIR/B "
                                f"with matching file names, or side-by-side AB images{first}")
        if limit:
            arr_a, arr_b = arr_a[:limit], arr_b[:limit]
        images_a, images_b = np.stack(arr_a), np.stack(arr_b)
        name = str(root.resolve())
    images_a = np.ascontiguousarray(images_a, dtype=np.uint8)
    images_b = np.ascontiguousarray(images_b, dtype=np.uint8)
    for side, images in (("A", images_a), ("B", images_b)):
        if side == "B" and source.split(":")[0] == EDGES:
            continue  # written by data.prepare above
        data._write_cache(out / side, images, None,
                          _base_meta(f"{name} ({side})", split, images, seen, [], crop))
    a, b = data.load_dataset(out / "A"), data.load_dataset(out / "B")
    meta = {"version": data.CACHE_VERSION, "kind": "paired", "source": name, "split": split,
            "count": len(a), "files_seen": int(seen), "skipped": skipped, "size": a.size,
            "channels": a.channels, "crop": crop, "a_sha256": a.key, "b_sha256": b.key,
            "content_sha256": hashlib.sha256(f"{a.key}|{b.key}".encode()).hexdigest()}
    io.write_json(out / "pairs.json", meta)  # the commit: both halves are complete
    return load_paired(out)


def load_paired(path: str | Path) -> Paired:
    """Load a prepared paired set, checking both halves are the ones pairs.json names."""
    path = Path(path)
    try:
        meta = json.loads((path / "pairs.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GanforgeError(f"{path} is not a prepared paired data directory (no pairs.json); "
                            "run `ganforge prepare --paired` on it") from None
    except (OSError, ValueError) as e:
        raise GanforgeError(f"{path}/pairs.json is unreadable: {e}") from None
    a, b = data.load_dataset(path / "A"), data.load_dataset(path / "B")
    if (a.key, b.key) != (meta.get("a_sha256"), meta.get("b_sha256")) or len(a) != len(b):
        raise GanforgeError(f"the paired cache in {path} is unfinished or damaged (its A and B "
                            "halves do not match pairs.json); prepare it again")
    return Paired(path=path, a=a, b=b, meta=meta)


def describe_paired(p: Paired) -> str:
    return data.report(p.meta, p.path, "pairs", "pairs.json")


def resolve_paired(source: str, *, size: int = 0, channels: int = 0, crop: float = 1.0,
                   progress: bool = True) -> Paired:
    """What `train --variant pix2pix --data` accepts: a prepared paired dir, a paired folder
    or `fashion-mnist-edges[:split]` (prepared on the fly, cached)."""
    path = Path(source)
    if (path / "pairs.json").exists():
        p = load_paired(path)
        if (size and p.a.size != size) or (channels and p.a.channels != channels):
            raise GanforgeError(f"{source} was prepared at {p.a.size}px/{p.a.channels}ch but "
                                "the config asks otherwise; prepare it again or drop size/"
                                "channels")
        return p
    if source.split(":")[0] == EDGES:
        ident = json.dumps(["paired", source, size, channels, crop])
    elif path.is_dir():
        ident = json.dumps(["paired", str(path.resolve()), size, channels, crop,
                            _listing(path)])
    else:
        raise GanforgeError(f"data source not found: {source}")
    cached = _cached(ident)
    try:
        return load_paired(cached)
    except GanforgeError:
        p = prepare_paired(source, cached, size=size, channels=channels, crop=crop,
                           progress=progress)
        print(describe_paired(p))
        return p


def heldout_split(source: str) -> str | None:
    """The held-out split of a built-in source (`fashion-mnist-edges` -> `...:test`)."""
    base = source.split(":")[0]
    if base in (EDGES, "fashion-mnist"):
        return f"{base}:test"
    return None
