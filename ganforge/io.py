"""Crash-safe file writing: every file ganforge writes goes to a temp file, then `os.replace`.

A reader (or a resumed run after `kill -9`) therefore sees either the old file or the new
one, never half of one. A temp file left behind by a killed process is removed the next time
any process on this machine writes into that directory; a full disk is one clear error that
leaves the previous file intact and no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ganforge.errors import GanforgeError

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# Temp files are named .<name>.<pid>@<host>.<random>.tmp, so a later writer can tell the
# leftovers of a dead process (same host, pid gone) from a write still in progress.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TMP_RE = re.compile(r"^\..+\.(\d+)@([0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp$")
_swept: set[str] = set()


def _umask() -> int:
    try:  # read without changing it (os.umask can only set it, racing other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide the file


def _write_error(e: OSError, path: Path) -> BaseException:
    """ENOSPC / EFBIG / EDQUOT become one clear GanforgeError naming the file; other errors
    are returned unchanged."""
    if e.errno in _DISK_FULL:
        return GanforgeError(f"disk full while writing {path} ({e.strerror}); the previous "
                             "version of the file is intact: free some space and try again")
    return e


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temp files that processes on this machine left behind when they were killed
    mid-write (their pid no longer exists). Returns the files removed."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            m = _TMP_RE.match(entry.name)
            if m is None or m.group(2) != _HOST or _pid_alive(int(m.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists but is not ours / not a pid we can test: leave its files alone
    return True


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success fsync it and rename it over `path`.

    On any failure the temp file is removed and `path` is untouched; a full disk raises a
    GanforgeError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if str(path.parent) not in _swept:  # once per directory and process
            remove_stale_temp_files(path.parent)
            _swept.add(str(path.parent))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as e:
        raise _write_error(e, path) from None
    try:
        with os.fdopen(fd, mode) as f:
            with contextlib.suppress(OSError):  # some filesystems have no modes
                os.fchmod(fd, _FILE_MODE)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise _write_error(e, path) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every filesystem allows it, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a .npy file (no pickle). The data goes through f.write: numpy's own writer
    (ndarray.tofile) reports a full disk as an OSError without errno."""
    array = np.asarray(array, order="C")
    if array.dtype.hasobject:
        raise ValueError("object arrays are not written (they would need pickle)")
    with atomic_open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(array.reshape(-1).view(np.uint8).data)


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line with a single write(), so a kill leaves at most one torn last line.
    A write cut short by a full disk is undone, so the log never holds half a line."""
    line = (json.dumps(record, sort_keys=True, default=_json_default) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise _write_error(e, Path(path)) from None
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise _write_error(e, Path(path)) from None
    finally:
        os.close(fd)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Rewrite a whole JSONL file atomically."""
    write_text(path, "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n"
                             for r in records))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL log, ignoring a torn last line left by a crash."""
    records = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn tail from an interrupted write
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
