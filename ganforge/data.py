"""Data preparation: images on disk -> a compact uint8 cache, decoded once.

A prepared data directory holds `images.npy` (uint8 [N, H, W, C]), optionally `labels.npy`
(int64 [N]) and `meta.json` (source, counts, skipped files and why, content hash, and the names
of the array files). `meta.json` is written last, so a directory without it is an unfinished
cache and is never used; preparing again into the same directory writes the new arrays beside
the old ones (`images-b.npy` ...) and switches `meta.json` over last, so a kill or a full disk at
any moment leaves the previous cache or the new one, each complete and loadable.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ganforge import io
from ganforge.errors import GanforgeError

CACHE_VERSION = 1
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
FASHION_MNIST_FILES = {  # official files and their MD5s (zalandoresearch/fashion-mnist)
    "train": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
              "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Refuse absurd dimensions before decoding (decompression bombs); 8k x 8k is plenty for a GAN.
MAX_PIXELS = 64_000_000
# The two sets of array names a cache alternates between (see the module docstring).
CACHE_FILES = ({"images": "images.npy", "labels": "labels.npy"},
               {"images": "images-b.npy", "labels": "labels-b.npy"})


class _Skip(ValueError):
    """A file is not used; the message is the reason given in the prepare report."""


@dataclass
class Dataset:
    """A prepared dataset: uint8 images [N, H, W, C] (memory-mapped) and their metadata."""

    path: Path
    images: np.ndarray
    labels: np.ndarray | None
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    @property
    def key(self) -> str:
        """Content hash of the images: the identity used by reference-statistics caches."""
        return self.meta["content_sha256"]

    @property
    def split(self) -> str:
        return self.meta.get("split", "train")

    def __len__(self) -> int:
        return self.images.shape[0]


def cache_root() -> Path:
    return Path(os.environ.get("GANFORGE_CACHE", Path.home() / ".cache" / "ganforge"))


# ----------------------------------------------------------------------------------------------
# Reading sources


def read_idx(path: str | Path) -> np.ndarray:
    """Read an MNIST-format idx file (optionally gzipped) into a numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise GanforgeError(f"cannot read idx file {path}: {e}") from None
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise GanforgeError(f"{path} is not an unsigned-byte MNIST idx file (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise GanforgeError(f"idx file {path} is truncated: header says {shape}, "
                            f"found {data.size} values")
    return data.reshape(shape)


def _is_idx(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
        return len(head) == 4 and head[:3] == b"\0\0\x08" and 1 <= head[3] <= 4
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def fashion_mnist_files(split: str) -> tuple[Path, Path]:
    """Locate (or download once, checksum-verified) the Fashion-MNIST files of a split.

    Looked up first in the directory named by ``GANFORGE_FASHION_MNIST`` (the four official
    .gz files; e.g. carried to a machine without network), then in the Debian package's
    directory, then in the cache."""
    img_name, img_md5, lbl_name, lbl_md5 = FASHION_MNIST_FILES[split]
    named = os.environ.get("GANFORGE_FASHION_MNIST")
    if named:
        d = Path(named)
        if not ((d / img_name).is_file() and (d / lbl_name).is_file()):
            raise GanforgeError(f"GANFORGE_FASHION_MNIST={named} lacks {img_name} or "
                                f"{lbl_name} (the official Fashion-MNIST .gz files)")
        return d / img_name, d / lbl_name
    for d in FASHION_MNIST_DIRS:
        if (d / img_name).exists() and (d / lbl_name).exists():
            return d / img_name, d / lbl_name
    target = cache_root() / "fashion-mnist"
    for name, md5 in ((img_name, img_md5), (lbl_name, lbl_md5)):
        path = target / name
        if path.exists() and hashlib.md5(path.read_bytes()).hexdigest() == md5:
            continue
        _download(FASHION_MNIST_URL + name, path, md5)
    return target / img_name, target / lbl_name


def _download(url: str, path: Path, md5: str) -> None:
    import urllib.request

    print(f"downloading {url} (once) ...")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            payload = r.read()
    except OSError as e:
        raise GanforgeError(
            f"Fashion-MNIST is not installed and could not be downloaded ({e}); on Debian: "
            "apt-get install dataset-fashion-mnist") from None
    if hashlib.md5(payload).hexdigest() != md5:
        raise GanforgeError(f"download of {url} failed its checksum; nothing was saved")
    io.write_bytes(path, payload)


def _to_array(img: Image.Image, channels: int, size: int, crop: float) -> np.ndarray:
    """Decode one PIL image to uint8 [size, size, channels] (center crop, then resize)."""
    img.seek(0)  # first frame of animations
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    img = img.convert("L" if channels == 1 else "RGB")
    if size:  # 0: the file's own pixels, uncropped (evaluation at the images' own size)
        img = _crop_resize(img, size, crop)
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def _crop_resize(img: Image.Image, size: int, crop: float) -> Image.Image:
    """Center-crop the `crop` fraction of the shorter side as a square, then resize to size."""
    w, h = img.size
    side = max(1, round(min(w, h) * crop))
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    return img if side == size else img.resize((size, size), Image.Resampling.LANCZOS)


def _load_image(path: Path, channels: int, size: int, crop: float) -> np.ndarray:
    """One file -> array; raises ValueError with a short reason when the file must be skipped."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise _Skip("empty file")
            return _decode(f, channels, size, crop)
    except OSError as e:  # open/fstat only: _decode turns its own errors into _Skip
        raise _Skip(f"unreadable ({e.strerror or type(e).__name__})") from None


def _decode(f: Any, channels: int, size: int, crop: float) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                w, h = img.size  # from the header: nothing is decoded yet
                if w * h > MAX_PIXELS:
                    raise _Skip(f"too large ({w}x{h} pixels)")
                side = round(min(w, h) * crop)
                if side < max(2, size // 4):
                    raise _Skip(f"too small ({w}x{h}; {side}px after crop, need "
                                f"{max(2, size // 4)} for size {size})")
                img.seek(0)  # first frame of animations
                img.load()
                return _to_array(_upright(img), channels, size, crop)
    except _Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Skip("too large (decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise _Skip("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, EOFError) as e:
        raise _Skip(f"corrupt or truncated ({str(e).strip() or type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - one bad file must never stop a run
        raise _Skip(f"unreadable ({type(e).__name__}: {e})") from None


def _upright(img: Image.Image) -> Image.Image:
    """Photos are often stored sideways with an EXIF Orientation tag: use them the way every
    viewer shows them. A damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - the tag is a hint; the pixels are fine
        return img


def list_images(folder: Path, per_folder: int = 0, limit: int = 0) -> list[Path]:
    # A dangling or looping symlink is listed (and reported as unreadable), not silently
    # dropped; a directory, FIFO or device with an image name is not a file and is ignored.
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and (p.is_file() or p.is_symlink() and not p.exists()))
    if per_folder:
        taken: dict[Path, int] = defaultdict(int)
        kept = []
        for p in files:
            if taken[p.parent] < per_folder:
                taken[p.parent] += 1
                kept.append(p)
        files = kept
    return files[:limit] if limit else files


def _gray_image(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    except Exception:  # noqa: BLE001 - decided again (and reported) when the file is loaded
        return True


# ----------------------------------------------------------------------------------------------
# prepare


def decode_files(files: list[Path], root: Path, channels: int, size: int, crop: float,
                 progress: bool, desc: str = "prepare"
                 ) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """Decode image files (progress bar); a file that cannot be used is skipped with its
    reason (path relative to root), never fatal."""
    arrays, skipped = [], []
    for p in tqdm(files, desc=desc, unit="img", disable=not progress):
        try:
            arrays.append(_load_image(p, channels, size, crop))
        except ValueError as e:
            skipped.append({"path": str(p.relative_to(root)), "reason": str(e)})
    return arrays, skipped


def _decode_folder(folder: Path, files: list[Path], channels: int, size: int, crop: float,
                   progress: bool, desc: str = "prepare"
                   ) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """decode_files for a folder source (channels 0: 1 when the files are gray, else 3); a
    folder of which no file could be used is one GanforgeError naming the first problem."""
    if not channels:
        channels = 1 if all(_gray_image(p) for p in files[:200]) else 3
    arrays, skipped = decode_files(files, folder, channels, size, crop, progress, desc)
    if not arrays:
        raise GanforgeError(f"none of the {len(files)} image files under {folder} could "
                            f"be used (first problem: {skipped[0]['path']}: "
                            f"{skipped[0]['reason']})")
    return arrays, skipped


def read_native(folder: str | Path, progress: bool = True
                ) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Every image under `folder` at its own resolution, neither cropped nor resized (what
    evaluation feeds the Inception resize): uint8 [N, H, W, C], C = 1 when the files are gray,
    else 3, and the skipped files with their reasons. Images of more than one size are one
    GanforgeError listing the sizes (score them at one size with `prepare --size`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanforgeError(f"image folder not found: {folder}")
    files = list_images(folder)
    if not files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise GanforgeError(f"no image files ({exts}) found under {folder}")
    channels = 1 if all(_gray_image(p) for p in files) else 3  # every file: no colour lost
    arrays, skipped = _decode_folder(folder, files, channels, 0, 1.0, progress, desc="read")
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, a in enumerate(arrays):
        by_size[a.shape[:2]].append(i)
    if len(by_size) > 1:
        bad = {s["path"] for s in skipped}
        used = [str(p.relative_to(folder)) for p in files]
        used = [name for name in used if name not in bad]  # in the order of `arrays`
        sizes = sorted(by_size.items(), key=lambda kv: -len(kv[1]))
        listed = "; ".join(f"{w}x{h}: {len(ix)} (e.g. {_printable(used[ix[0]])})"
                           for (h, w), ix in sizes[:4])
        raise GanforgeError(f"the images under {folder} have {len(sizes)} different sizes "
                            f"({listed}); a set is scored at its own resolution, so give "
                            "--size N to resize every image to NxN first (center crop, "
                            "LANCZOS), or keep one size per folder")
    return np.stack(arrays), skipped


def check_prepare_args(size: int, channels: int, crop: float) -> None:
    """The checks every kind of prepare makes on --size, --channels and --crop."""
    if not 0 < crop <= 1:
        raise GanforgeError(f"--crop must be in (0, 1], got {crop}")
    if size and not 8 <= size <= 1024:
        raise GanforgeError(f"--size must be between 8 and 1024, got {size}")
    if channels not in (0, 1, 3):
        raise GanforgeError(f"--channels must be 1 or 3, got {channels}")


def prepare(source: str, out: str | Path, *, size: int = 0, channels: int = 0, crop: float = 1.0,
            limit: int = 0, per_folder: int = 0, progress: bool = True,
            mirror: bool = False) -> Dataset:
    """Prepare `source` (image folder, idx file, or `fashion-mnist[:train|:test]`) into `out`.

    size 0 keeps the source's size (folders: 64); channels 0 means 1 for gray-only sources,
    else 3. `mirror` adds every image's horizontal mirror image (twice the images). Returns
    the loaded Dataset. An existing finished cache at `out` is replaced only once the new one
    is complete.
    """
    check_prepare_args(size, channels, crop)
    out = Path(out)
    labels = None
    skipped: list[dict[str, str]] = []
    name, split = source, "train"
    if source.split(":")[0] == "fashion-mnist":
        split = source.split(":", 1)[1] if ":" in source else "train"
        if split not in FASHION_MNIST_FILES:
            raise GanforgeError(f"unknown split {split!r} for fashion-mnist (use train or test)")
        img_path, lbl_path = fashion_mnist_files(split)
        images = read_idx(img_path)[..., None]
        labels = read_idx(lbl_path).astype(np.int64)
        images, labels = _cap(images, labels, limit)
        images = _resize_array(images, size, channels or 1, crop)
        n_files = len(images)
        name = "fashion-mnist"
    else:
        path = Path(source)
        if not path.exists():
            raise GanforgeError(f"data source not found: {source}")
        if path.is_file():
            if not _is_idx(path):
                raise GanforgeError(f"{source} is a file but not an MNIST idx file; give a "
                                    "folder of images, an idx file or `fashion-mnist`")
            images = read_idx(path)
            if images.ndim != 3:
                raise GanforgeError(f"{source} holds {images.ndim}-d data, not images [N, H, W]")
            images, _ = _cap(images[..., None], None, limit)
            images = _resize_array(images, size, channels or 1, crop)
            n_files = len(images)
        else:
            files = list_images(path, per_folder, limit)
            if not files:
                exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise GanforgeError(f"no image files ({exts}) found under {source}")
            arrays, skipped = _decode_folder(path, files, channels, size or 64, crop, progress)
            images = np.stack(arrays)
            n_files = len(files)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if mirror:
        images, labels = mirror_images(images, labels)
    meta = {
        "version": CACHE_VERSION,
        "source": name if name == "fashion-mnist" else str(Path(source).resolve()),
        "split": split,
        "count": int(images.shape[0]),
        "files_seen": int(n_files),
        "skipped": skipped,
        "size": int(images.shape[1]),
        "channels": int(images.shape[3]),
        "crop": crop,
        "limit": limit,
        "per_folder": per_folder,
        "content_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
        "has_labels": labels is not None,
        "mirror": mirror,
    }
    if labels is not None and name == "fashion-mnist":
        meta["classes"] = FASHION_MNIST_CLASSES
    _write_cache(out, images, labels, meta)
    return load_dataset(out)


def mirror_images(images: np.ndarray, labels: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Horizontal-flip doubling: the images [N, H, W, C] followed by their mirror images (and
    the labels twice). For data whose mirror image is as plausible as the image (faces,
    sprites, products; not text)."""
    flipped = np.ascontiguousarray(np.concatenate([images, images[:, :, ::-1]]))
    return flipped, None if labels is None else np.concatenate([labels, labels])


def _write_cache(out: Path, images: np.ndarray, labels: np.ndarray | None,
                 meta: dict[str, Any]) -> None:
    """Write the arrays under the names the current meta.json does not use, then replace
    meta.json (the commit), then remove the old arrays: the previous cache stays loadable until
    the new one is complete, whatever happens in between."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GanforgeError(f"cannot create the data directory {out}: {e.strerror}") from None
    try:  # the array names of the finished cache there now (older caches: the plain names)
        current = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        in_use = current.get("files", CACHE_FILES[0])["images"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        in_use = None
    files = dict(CACHE_FILES[1] if in_use == CACHE_FILES[0]["images"] else CACHE_FILES[0])
    io.write_npy(out / files["images"], images)
    if labels is not None:
        io.write_npy(out / files["labels"], labels)
    else:
        del files["labels"]
    io.write_json(out / "meta.json", {**meta, "files": files})
    for name in {n for pair in CACHE_FILES for n in pair.values()} - set(files.values()):
        (out / name).unlink(missing_ok=True)


def _cap(images: np.ndarray, labels: np.ndarray | None, limit: int):
    if limit:
        images = images[:limit]
        labels = labels[:limit] if labels is not None else None
    return images, labels


def _resize_array(images: np.ndarray, size: int, channels: int, crop: float) -> np.ndarray:
    """Crop/resize/recolour an in-memory uint8 [N, H, W, C] array (idx sources)."""
    n, h, w, c = images.shape
    if channels == 3 and c == 1:
        images = np.repeat(images, 3, axis=3)
    size = size or h
    if size == h and crop == 1.0:
        return images
    gray = images.shape[3] == 1
    return np.stack([_to_array(Image.fromarray(im[:, :, 0] if gray else im), channels, size, crop)
                     for im in images])


def describe(ds: Dataset) -> str:
    """The prepare report: how many files were used and which were skipped and why."""
    return report(ds.meta, ds.path, "images", "meta.json")


def report(m: dict[str, Any], path: Path, noun: str, meta_name: str) -> str:
    """The report of any prepared cache (`noun`: images, pairs ...) from its metadata."""
    mirrored = f"; {m['count'] // 2} and their mirror images" if m.get("mirror") else ""
    lines = [f"prepared {m['count']} {noun} ({m['size']}x{m['size']}, {m['channels']} channel"
             f"{'s' if m['channels'] > 1 else ''}{mirrored}) from {_printable(m['source'])} "
             f"into {_printable(str(path))}"]
    if m["skipped"]:
        lines.append(f"skipped {len(m['skipped'])} of {m['files_seen']} files:")
        for s in m["skipped"][:20]:
            lines.append(f"  {_printable(s['path'])}: {s['reason']}")
        if len(m["skipped"]) > 20:
            lines.append(f"  ... and {len(m['skipped']) - 20} more (see {path}/{meta_name})")
    return "\n".join(lines)


def _printable(name: str) -> str:
    """A file name that is not valid UTF-8 (kept by Python as surrogates) with its undecodable
    bytes shown as \\xNN escapes, so printing it cannot fail."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------------------------
# loading


def load_dataset(path: str | Path, verify: bool = True) -> Dataset:
    """Load a prepared data directory, checking it is complete and unmodified."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GanforgeError(f"{path} is not a prepared data directory (no meta.json); "
                            "run `ganforge prepare` on it first") from None
    except (OSError, json.JSONDecodeError) as e:
        raise GanforgeError(f"{path}/meta.json is unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise GanforgeError(f"{path}/meta.json is not a data cache description; prepare again")
    files = meta.get("files", CACHE_FILES[0])
    known = {n for pair in CACHE_FILES for n in pair.values()}  # never a path from the file
    if not (isinstance(files, dict) and files.get("images") in known
            and files.get("labels", "labels.npy") in known):
        raise GanforgeError(f"{path}/meta.json names unexpected files {files!r}; prepare again")
    try:
        images = np.load(path / files["images"], mmap_mode="r", allow_pickle=False)
        labels = (np.load(path / files["labels"], allow_pickle=False)
                  if meta.get("has_labels") else None)
    except (OSError, ValueError, KeyError) as e:
        raise GanforgeError(f"the cache in {path} is damaged ({e}); prepare it again") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != meta.get("count"):
        raise GanforgeError(f"the cache in {path} does not match its meta.json; prepare it again")
    if verify and hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() != meta.get(
            "content_sha256"):
        raise GanforgeError(f"the cache in {path} was modified (content hash mismatch); "
                            "prepare it again")
    return Dataset(path=path, images=images, labels=labels, meta=meta)


def _size_mtime(p: Path) -> tuple[int, int]:
    try:
        st = p.stat()
    except OSError:  # a dangling link: prepare reports it
        return -1, -1
    return st.st_size, st.st_mtime_ns


def resolve(data: str, *, size: int = 0, channels: int = 0, crop: float = 1.0,
            progress: bool = True, mirror: bool = False) -> Dataset:
    """What `train --data` accepts: a prepared dir, or a source prepared on the fly (cached;
    with `mirror`, with every image's mirror image added)."""
    path = Path(data)
    if path.is_dir() and not (path / "meta.json").exists() and any(
            (path / n).exists() for pair in CACHE_FILES for n in pair.values()):
        raise GanforgeError(f"{data} is an unfinished prepared data directory (no meta.json: "
                            "its prepare was interrupted); run `ganforge prepare` again")
    if path.is_dir() and (path / "meta.json").exists():
        ds = load_dataset(path)
        if (size and ds.size != size) or (channels and ds.channels != channels):
            raise GanforgeError(
                f"{data} was prepared at {ds.size}px/{ds.channels}ch but the config asks for "
                f"{size or ds.size}px/{channels or ds.channels}ch; prepare it again or drop "
                "size/channels")
        if mirror and not ds.meta.get("mirror"):
            raise GanforgeError(f"mirror is on but {data} was prepared without its mirror "
                                "images; prepare it again with --mirror, or pass the image "
                                "folder itself as --data")
        return ds
    if data.split(":")[0] == "fashion-mnist":
        ident = f"{data}|{size}|{channels}|{crop}"
    elif path.exists():
        files = list_images(path) if path.is_dir() else [path]
        listing = [(str(p), *_size_mtime(p)) for p in files]
        ident = json.dumps([str(path.resolve()), size, channels, crop, listing])
    else:
        raise GanforgeError(f"data source not found: {data}")
    if mirror:
        ident += "|mirror"
    key = hashlib.sha256(f"v{CACHE_VERSION}|{ident}".encode()).hexdigest()[:16]
    cached = cache_root() / "data" / key
    if (cached / "meta.json").exists():
        try:
            return load_dataset(cached)
        except GanforgeError:
            pass  # a damaged cache is simply rebuilt
    ds = prepare(data, cached, size=size, channels=channels, crop=crop, progress=progress,
                 mirror=mirror)
    print(describe(ds))
    return ds
