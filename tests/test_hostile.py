"""A hostile-input corpus, built by the tests themselves (no committed binaries).

Every bad input gets one clear message naming the problem (or, for one bad image among many,
a line in prepare's report) and never damages a run, a checkpoint or a cache. The user's path
is the CLI: a few cases run `python -m ganforge` (`run_cli`) each; the long tables run the real
`ganforge.cli.main` many times in one subprocess (`run_cli_batch`), which is the same code with
one interpreter start instead of dozens.

The corpus tries 122 bad inputs: 36 image files (18 skipped with their reason, 12 odd but valid
ones used, 6 never listed), 53 config files and options, 22 checkpoints (each refused by
`sample`, `load_generator` and `train --resume`: 66 refusals), 5 data directories that vanish or
change under a run, 4 full disks, a booby-trapped TorchScript archive and a dead writer's temp
file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io as _io
import json
import os
import pickle
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image

from ganforge import checkpoint, data, io
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator
from ganforge.train import train

TINY = {"variant": "dcgan", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16,
        "log_every": 1, "sample_every": 3, "grid_size": 16}

_BATCH = r"""
import contextlib, io, json, sys, traceback
from ganforge.cli import main
results = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            traceback.print_exc()
            rc = "crashed"
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def run_cli_batch(argvs: list[list[str]], cwd: Path) -> list[dict]:
    """Run `ganforge.cli.main(argv)` for each argv in one fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(argvs), text=True,
                       capture_output=True, cwd=cwd, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def one_line_error(res: dict | subprocess.CompletedProcess) -> str:
    rc, err = (res["rc"], res["err"]) if isinstance(res, dict) else (res.returncode, res.stderr)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "train.lock":
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def items(n: int, split: str = "test") -> np.ndarray:
    img_path, _ = data.fashion_mnist_files(split)
    return data.read_idx(img_path)[:n]


def encode(a: np.ndarray, fmt: str, **kw) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ----------------------------------------------------------------------------------------------
# image folders


def deflate_bomb_png(side: int = 30000) -> bytes:
    """A real, valid 1-bit PNG of side x side zero pixels: ~110 kB on disk, ~900 MB decoded."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    co = zlib.compressobj(9)
    idat = b"".join([co.compress(row * 1000) for _ in range(side // 1000)] + [co.flush()])
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0,
                                                                   0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def ihdr_bomb_png(small_png: bytes, side: int = 30000) -> bytes:
    """A small real PNG whose IHDR claims side x side, with a correct CRC."""
    raw = bytearray(small_png)
    body = struct.pack(">II", side, side) + bytes(raw[24:29])
    raw[16:29] = body
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return bytes(raw)


def exif_rotated_jpeg(shown: np.ndarray) -> bytes:
    """A JPEG stored sideways whose EXIF Orientation (6: rotate 90 CW) shows `shown` upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)
    buf = _io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def build_image_corpus(root: Path) -> tuple[dict[str, str | None], set[str]]:
    """Write the hostile folder. Returns {relative path: None if used, else a word of the
    reason it is skipped} and the set of files that must be ignored (never listed)."""
    it = items(30)
    rgb = [np.stack([x] * 3, -1) for x in it]
    rng = np.random.default_rng(0)
    root.mkdir()
    expect: dict[str, str | None] = {}

    def put(name: str, payload: bytes, outcome: str | None) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
        expect[name] = outcome

    # good controls, including odd but valid encodings
    put("good.png", encode(it[0], "PNG"), None)
    put("UPPER.PNG", encode(it[1], "PNG"), None)
    put("with space é 写真.png", encode(it[2], "PNG"), None)
    put("jpeg named.png", encode(rgb[3], "JPEG"), None)  # content decides, not the name
    put("cmyk.jpg", _cmyk_jpeg(rgb[4]), None)
    put("sixteen.png", encode(it[5].astype(np.uint16) * 257, "PNG"), None)
    put("anim.gif", _animated(it[6], it[7], "GIF"), None)
    put("anim.webp", _animated(rgb[8], rgb[9], "WEBP"), None)
    put("palette-transparency.png", _palette_with_transparency(rgb[10]), None)
    put("exif-rotated.jpg", exif_rotated_jpeg(rgb[11]), None)
    put("sub/folder.png/inner.png", encode(it[12], "PNG"), None)  # a directory named *.png
    crc = bytearray(encode(it[13], "PNG"))  # bad IDAT CRC, intact zlib stream: pixels are fine
    i = crc.index(b"IDAT")
    crc[i + 4 + struct.unpack(">I", crc[i - 4:i])[0]] ^= 0xFF
    put("idat-crc.png", bytes(crc), None)
    # bad files: each is skipped with its reason
    put("zero.png", b"", "empty")
    put("text.png", b"this is not an image\n", "not an image")
    put("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not an image")
    put("corrupt.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(500), "not an image")
    put("random.jpg", b"\xff\xd8\xff" + rng.bytes(1000), "not an image")
    put("._appledouble.jpg", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X" + bytes(100),
        "not an image")
    put("truncated.png", encode(it[14], "PNG")[:300], "truncated")
    put("truncated.jpg", encode(rgb[15], "JPEG")[:400], "truncated")
    flip = bytearray(encode(it[16], "PNG"))
    flip[flip.index(b"IDAT") + 20] ^= 0xFF
    put("idat-flipped.png", bytes(flip), "corrupt")
    put("bomb-deflate.png", deflate_bomb_png(), "too large")
    put("bomb-ihdr.png", ihdr_bomb_png(encode(it[17], "PNG")), "too large")
    gif = bytearray(encode(it[18], "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen size
    put("bomb.gif", bytes(gif), "too large")
    jpg = bytearray(encode(it[19], "JPEG"))
    k = jpg.index(b"\xff\xc0")
    jpg[k + 5:k + 9] = struct.pack(">HH", 60000, 60000)  # SOF0 height, width
    put("bomb.jpg", bytes(jpg), "too large")
    put("tiny.png", encode(np.zeros((1, 1), np.uint8), "PNG"), "too small")
    put(os.fsdecode(b"bad-name-\xff.png"), b"not an image either", "not an image")
    os.symlink("loop-b.png", root / "loop-a.png")
    os.symlink("loop-a.png", root / "loop-b.png")
    expect["loop-a.png"] = expect["loop-b.png"] = "unreadable"
    os.symlink("no-such-file.png", root / "dangling.png")
    expect["dangling.png"] = "unreadable"
    put("locked.png", encode(it[20], "PNG"), None)
    os.chmod(root / "locked.png", 0)
    if os.geteuid() != 0:  # root reads a mode-000 file; the symlinks above cover "unreadable"
        expect["locked.png"] = "unreadable"
    # never listed: not image extensions, a directory loop, a FIFO that would block a read
    ignored = {"notes.txt", "weights.npy", "README", ".hidden"}
    for name in ignored:
        (root / name).write_bytes(b"ignored")
    os.symlink(".", root / "loop-dir")
    os.mkfifo(root / "pipe.png")
    ignored |= {"loop-dir", "pipe.png"}
    return expect, ignored


def _cmyk_jpeg(rgb: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def _animated(a: np.ndarray, b: np.ndarray, fmt: str) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, save_all=True, append_images=[Image.fromarray(b)],
                            duration=100, loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def _palette_with_transparency(rgb: np.ndarray) -> bytes:
    im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = _io.BytesIO()
    im.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def test_hostile_image_folder_end_to_end(tmp_path):
    folder = tmp_path / "hostile"
    expect, ignored = build_image_corpus(folder)
    r = run_cli("prepare", str(folder), "--out", str(tmp_path / "data"), "--size", "28",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    skipped = {s["path"]: s["reason"] for s in meta["skipped"]}
    bad = {k: v for k, v in expect.items() if v is not None}
    assert set(skipped) == set(bad)
    for name, word in bad.items():
        assert word in skipped[name], (name, skipped[name])
    used = len(expect) - len(bad)
    assert meta["files_seen"] == len(expect) and meta["count"] == used
    assert not any(name in skipped or name in expect for name in ignored)
    # the report names every skipped file and its reason, even a name that is not UTF-8
    assert f"prepared {used} images (28x28, 3 channels)" in r.stdout
    assert f"skipped {len(bad)} of {len(expect)} files:" in r.stdout
    for name, reason in skipped.items():
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        assert f"  {shown}: {reason}" in r.stdout
    assert r"bad-name-\xff.png: not an image" in r.stdout
    ds = data.load_dataset(tmp_path / "data")
    assert ds.images.shape == (used, 28, 28, 3)


def test_decoded_pixels_of_odd_but_valid_images(tmp_path):
    """The valid oddities are decoded to the right pixels, not just 'not skipped'."""
    it = items(4)
    shown = np.zeros((32, 32, 3), np.uint8)
    shown[:16] = 255  # white top half, as the viewer shows it
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a-exif.jpg").write_bytes(exif_rotated_jpeg(shown))
    (folder / "b-anim.gif").write_bytes(_animated(it[0], it[1], "GIF"))
    (folder / "c-anim.webp").write_bytes(_animated(np.stack([it[2]] * 3, -1),
                                                   np.stack([it[3]] * 3, -1), "WEBP"))
    (folder / "d-jpeg.png").write_bytes(encode(np.stack([it[3]] * 3, -1), "JPEG", quality=100))
    ds = data.prepare(str(folder), tmp_path / "o", size=32, channels=1, progress=False)
    assert ds.meta["skipped"] == []
    exif, gif, webp, jpeg = ds.images[..., 0].astype(int)
    assert exif[:12].min() > 200 and exif[20:].max() < 50  # upright, not sideways
    first = np.asarray(Image.fromarray(it[0]).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.abs(gif - first).max() <= 2  # the first frame
    first = np.asarray(Image.fromarray(it[2]).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.abs(webp - first).mean() < 2
    third = np.asarray(Image.fromarray(it[3]).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.abs(jpeg - third).mean() < 4


_RSS = ("import resource, sys\nfrom ganforge.cli import main\nrc = main(sys.argv[1:])\n"
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)")


def test_decompression_bombs_are_refused_without_allocating(tmp_path):
    good = encode(items(1)[0], "PNG")
    peaks = {}
    for case in ("control", "bombs"):
        folder = tmp_path / case
        folder.mkdir()
        (folder / "good.png").write_bytes(good)
        if case == "bombs":
            (folder / "deflate.png").write_bytes(deflate_bomb_png())
            (folder / "ihdr.png").write_bytes(ihdr_bomb_png(good))
        r = subprocess.run([sys.executable, "-c", _RSS, "prepare", str(folder), "--out",
                            str(tmp_path / f"out-{case}"), "--size", "28", "--no-progress"],
                           capture_output=True, text=True, timeout=120)
        kb, rc = r.stdout.split("MAXRSS_KB")[1].split()
        assert rc == "0", r.stderr
        peaks[case] = int(kb) * 1024
    # decoding the 30000x30000 bomb would take ~900 MB; refusing it costs nothing
    assert peaks["bombs"] - peaks["control"] < 50 * 2**20, peaks
    meta = json.loads((tmp_path / "out-bombs" / "meta.json").read_text())
    assert [s["path"] for s in meta["skipped"]] == ["deflate.png", "ihdr.png"]


# ----------------------------------------------------------------------------------------------
# config files and options

NEW = ["--out", "new"]
CONFIG_FILES = {
    # file name: (content, the words the one-line error must contain)
    "unknown.json": ('{"learning_rate": 0.1}', "unknown config key 'learning_rate'"),
    "str-for-int.json": ('{"batch_size": "64"}', "'batch_size' expects an int, got '64'"),
    "float-for-int.json": ('{"batch_size": 64.5}', "'batch_size' expects an int"),
    "bool-for-float.json": ('{"lr_g": true}', "'lr_g' expects a float, got True"),
    "bool-for-int.json": ('{"steps": false}', "'steps' expects an int"),
    "list.json": ('{"batch_size": [64]}', "'batch_size' expects an int, got [64]"),
    "null.json": ('{"z_dim": null}', "'z_dim' expects an int, got None"),
    "object-for-str.json": ('{"variant": {"name": "dcgan"}}', "'variant' expects a str"),
    "str-for-bool.json": ('{"health": "yes"}', "'health' expects a bool"),
    "negative.json": ('{"batch_size": -4}', "'batch_size' must be >= 1"),
    "negative-width.json": ('{"g_width": -1}', "'g_width' must be >= 1"),
    "nan.json": ('{"lr_g": NaN}', "'lr_g' must be a finite number, got nan"),
    "infinity.json": ('{"lr_d": Infinity}', "'lr_d' must be a finite number, got inf"),
    "neg-infinity-int.json": ('{"steps": -Infinity}', "'steps' expects an int"),
    "huge-batch.json": ('{"batch_size": 1000000000000}', "'batch_size' must be <= 65536"),
    "huge-steps.json": ('{"steps": 1' + "0" * 30 + "}", "'steps' must be <= 9007199254740992"),
    "huge-seed.json": ('{"seed": 18446744073709551616}', "'seed' must be <="),
    "huge-float.json": ('{"lr_g": 1e400}', "'lr_g' must be a finite number"),
    "5000-digits.json": ('{"steps": 1' + "0" * 5000 + "}", "is not valid JSON"),
    "deep.json": ('{"steps": ' + "[" * 100000 + "]" * 100000 + "}", "is not valid JSON"),
    "bad-choice.json": ('{"loss": "mse"}', "'loss' must be one of"),
    "bad-channels.json": ('{"channels": 2}', "'channels' must be one of"),
    "size-7.json": ('{"size": 7}', "'size' must be between 8 and 1024"),
    "empty-data.json": ('{"data": ""}', "'data' must not be empty"),
    "trailing-comma.json": ('{"steps": 5,}', "is not valid JSON"),
    "empty.json": ("", "is not valid JSON"),
    "a-list.json": ('[["steps", 5]]', "must hold a table/object of KEY: VALUE (found list)"),
    "a-number.json": ("5", "must hold a table/object of KEY: VALUE (found int)"),
    "not-utf8.json": (b'{"steps": "\xff\xfe"}', "cannot read config file"),
    "bad.toml": ("steps = = 5", "is not valid TOML"),
    "str-for-int.toml": ('batch_size = "64"', "'batch_size' expects an int, got '64'"),
    "table.toml": ("[train]\nsteps = 5", "unknown config key 'train'"),
    "inf.toml": ("lr_d = inf", "'lr_d' must be a finite number"),
    "date.toml": ("seed = 2024-01-01", "'seed' expects an int"),
}
SET_OPTIONS = {
    # --set / option forms: (arguments, the words the one-line error must contain)
    "no equals": (["--set", "batch_size"], "--set expects KEY=VALUE"),
    "empty value": (["--set", "batch_size="], "'batch_size' expects an int, got ''"),
    "empty key": (["--set", "=5"], "unknown config key ''"),
    "nan": (["--set", "lr_g=nan"], "'lr_g' must be a finite number"),
    "inf": (["--set", "lr_g=inf"], "'lr_g' must be a finite number"),
    "1e400": (["--set", "lr_d=1e400"], "'lr_d' must be a finite number"),
    "float for int": (["--set", "batch_size=1e3"], "'batch_size' expects an int, got '1e3'"),
    "python expression": (["--set", "batch_size=10**12"], "'batch_size' expects an int"),
    "huge batch": (["--set", "batch_size=1000000000000"], "'batch_size' must be <= 65536"),
    "huge seed": (["--set", "seed=99999999999999999999999"], "'seed' must be <="),
    "5000 digits": (["--set", "steps=1" + "0" * 5000], "'steps' expects an int, got '100"),
    "bad bool": (["--set", "health=maybe"], "'health' expects a bool, got 'maybe'"),
    "wrong case": (["--set", "BATCH_SIZE=4"], "unknown config key 'BATCH_SIZE'"),
    "negative --steps": (["--steps", "-5"], "'steps' must be >= 1"),
    "--crop nan": (["--crop", "nan"], "'crop' must be a finite number"),
    "empty data": (["--set", "data="], "'data' must not be empty"),
}


def test_hostile_config_files_and_options(tmp_path):
    argvs, expected = [], []
    for name, (content, words) in CONFIG_FILES.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        argvs.append(["train", "--config", name, *NEW])
        expected.append((name, words))
    for name, (args, words) in SET_OPTIONS.items():
        argvs.append(["train", *args, *NEW])
        expected.append((name, words))
    argvs += [["train", "--config", "missing.json", *NEW], ["train", "--config", ".", *NEW]]
    expected += [("missing file", "config file not found: missing.json"),
                 ("a directory", "cannot read config file")]
    results = run_cli_batch(argvs, tmp_path)
    for (name, words), res in zip(expected, results, strict=True):
        line = one_line_error(res)
        assert words in line, (name, line)
        assert len(line) < 300, (name, line)  # a 5000-digit value is not echoed in full
    assert not (tmp_path / "new").exists()
    # the same through `python -m ganforge`, for two of them
    r = run_cli("train", "--config", "unknown.json", *NEW, cwd=tmp_path)
    assert "unknown config key 'learning_rate'" in one_line_error(r)
    r = run_cli("train", "--set", "lr_g=nan", *NEW, cwd=tmp_path)
    assert "'lr_g' must be a finite number" in one_line_error(r)
    assert not (tmp_path / "new").exists()


def test_config_file_with_a_bom_is_accepted(tmp_path):
    from ganforge.config import load_config_file

    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"steps": 5, "batch_size": 64.0}')
    assert load_config_file(path) == {"steps": 5, "batch_size": 64}  # 64.0 is an int value


# ----------------------------------------------------------------------------------------------
# checkpoints


@pytest.fixture(scope="module")
def ck_run(fmnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-ck")
    train(build_config([{"data": str(fmnist_dir), **TINY, "steps": 3}]), root / "run",
          progress=False)
    train(build_config([{"data": str(fmnist_dir), **TINY, "variant": "mlp", "steps": 1}]),
          root / "mlp", progress=False)
    return root


class _Boom:
    """Pickles to a call of os.mkdir(marker): unpickling it creates the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def armed_pickle(marker: Path) -> bytes:
    payload = pickle.dumps({"G.weight": _Boom(marker)})
    pickle.loads(payload)  # prove it is armed: unpickling it does create the marker
    assert marker.is_dir()
    marker.rmdir()
    return payload


def _flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0x01
    return bytes(b)


def hostile_checkpoints(root: Path, src: bytes, marker: Path) -> dict[str, tuple[str, str]]:
    """Write the corpus into root. {file name: (words of the error, words of the error when
    it is the run's latest checkpoint given to `train --resume`)}."""
    n = struct.unpack("<Q", src[:8])[0]
    header = src[8:8 + n].decode()
    step_at = 8 + header.index('\\"step\\": ') + len('\\"step\\": ')
    ck = checkpoint.load_checkpoint(root / "run" / "checkpoints" / "latest.safetensors")
    mlp = checkpoint.load_checkpoint(root / "mlp" / "checkpoints" / "latest.safetensors")
    corpus: dict[str, tuple[str, str]] = {}

    def put(name: str, payload: bytes, words: str) -> None:
        (root / "bad" / name).write_bytes(payload)
        corpus[name] = (words, words)

    (root / "bad").mkdir()
    put("truncated-4.safetensors", src[:4], "is not a ganforge checkpoint (file is 4 bytes)")
    put("truncated-header.safetensors", src[:8 + n // 2], "truncated (header length")
    put("truncated-middle.safetensors", src[:len(src) // 2], "is damaged or truncated")
    put("truncated-last-byte.safetensors", src[:-1], "is damaged or truncated")
    put("empty.safetensors", b"", "(file is 0 bytes)")
    put("flip-length.safetensors", _flip(src, 5), "truncated (header length")
    put("flip-json.safetensors", _flip(src, 8), "(no ganforge header)")
    # still valid JSON, still a valid header, one value changed: caught by the header hash
    put("flip-step.safetensors", _flip(src, step_at), "failed its header check")
    put("flip-tensor-data.safetensors", _flip(src, len(src) - 100), "failed its content check")
    put("flip-first-tensor-byte.safetensors", _flip(src, 8 + n), "failed its content check")
    put("pickle.safetensors", armed_pickle(marker), "is not a ganforge checkpoint")
    buf = _io.BytesIO()
    torch.save({"G.weight": torch.zeros(2), "x": _Boom(marker)}, buf)
    put("torch-zip.safetensors", buf.getvalue(), "is not a ganforge checkpoint")
    buf = _io.BytesIO()
    torch.save({"x": _Boom(marker)}, buf, _use_new_zipfile_serialization=False)
    put("torch-legacy.safetensors", buf.getvalue(), "is not a ganforge checkpoint")
    from safetensors.torch import save as st_save

    put("plain-safetensors.safetensors", st_save(ck.module_state("G")), "(no ganforge header)")
    deep = json.dumps({"__metadata__": {"ganforge": "[" * 100000 + "]" * 100000}}).encode()
    put("deep-json.safetensors", struct.pack("<Q", len(deep)) + deep, "(no ganforge header)")
    listy = json.dumps({"__metadata__": {"ganforge": "[1, 2]"}}).encode()
    put("meta-list.safetensors", struct.pack("<Q", len(listy)) + listy,
        "(unknown format 'list')")
    bad_meta = json.dumps({"__metadata__": {"ganforge": json.dumps(
        {"format": checkpoint.FORMAT, "step": "three", "config": {}, "state": {},
         "optimizers": {}, "content_sha256": ""})}}).encode()
    put("meta-fields.safetensors", struct.pack("<Q", len(bad_meta)) + bad_meta,
        "(header field 'step' is missing or invalid)")
    put("huge-length.safetensors", struct.pack("<Q", 2**63) + src[8:],
        "truncated (header length")
    # consistent files whose networks do not match their config: another variant, another size
    other = root / "bad" / "other-variant.safetensors"
    checkpoint.save_checkpoint(other, config=ck.config, step=3, modules={}, optimizers={},
                               tensors=mlp.tensors, state=ck.meta["state"])
    corpus[other.name] = ("network 'G' does not match", "network 'G' does not match")
    bigger = root / "bad" / "other-size.safetensors"
    checkpoint.save_checkpoint(bigger, config=ck.config, step=3, modules={}, optimizers={},
                               tensors=ck.tensors, state={**ck.meta["state"], "size": 32})
    corpus[bigger.name] = ("network 'G' does not match", "the run was trained on 32px")
    (root / "bad" / "a-directory.safetensors").mkdir()
    corpus["a-directory.safetensors"] = ("holds no checkpoint", "is a directory")
    os.mkfifo(root / "bad" / "fifo.safetensors")  # reading it would block for ever
    corpus["fifo.safetensors"] = ("is not a regular file", "is not a regular file")
    return corpus


def test_hostile_checkpoints_are_refused_and_left_untouched(ck_run, tmp_path):
    root = tmp_path
    shutil.copytree(ck_run / "run", root / "run")
    shutil.copytree(ck_run / "mlp", root / "mlp")
    latest = root / "run" / "checkpoints" / "latest.safetensors"
    marker = tmp_path / "MARKER-code-ran"
    corpus = hostile_checkpoints(root, latest.read_bytes(), marker)
    assert len(corpus) == 22

    def stamp(p: Path) -> tuple:
        return (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() and not p.is_fifo() \
            else (p.is_dir(),)

    before = {name: stamp(root / "bad" / name) for name in corpus}
    argvs = []
    for name in corpus:
        argvs.append(["sample", f"bad/{name}", "--n", "2", "--out", "s"])
        # the same file as a run's latest checkpoint, resumed
        run = root / f"resume-{name}"
        shutil.copytree(root / "run", run, symlinks=True)
        target = run / "checkpoints" / "latest.safetensors"
        target.unlink()
        if (root / "bad" / name).is_fifo():
            os.mkfifo(target)
        elif (root / "bad" / name).is_dir():
            target.mkdir()
        else:
            shutil.copyfile(root / "bad" / name, target)
        argvs.append(["train", "--out", run.name, "--resume", "--steps", "6", "--no-progress"])
    digests = {name: tree_digest(root / f"resume-{name}") for name in corpus}
    results = iter(run_cli_batch(argvs, root))
    for name, (words, resume_words) in corpus.items():
        line = one_line_error(next(results))
        assert words in line, (name, line)
        line = one_line_error(next(results))
        assert resume_words in line, (name, line)
        assert tree_digest(root / f"resume-{name}") == digests[name], name  # run unchanged
        with pytest.raises(GanforgeError) as e:  # what `serve` calls
            load_generator(root / "bad" / name)
        assert words in str(e.value), (name, str(e.value))
        assert stamp(root / "bad" / name) == before[name], name  # file untouched
    assert not marker.exists()  # nothing was ever unpickled
    assert not (root / "s").exists()
    # and one of them through `python -m ganforge`
    r = run_cli("sample", "bad/pickle.safetensors", "--n", "2", "--out", "s", cwd=root)
    assert "is not a ganforge checkpoint" in one_line_error(r)
    assert not marker.exists()


def test_a_header_without_its_hash_is_refused(ck_run, tmp_path):
    """The header hash must be there: a file whose header was edited (the step set back,
    the learning rate changed) and its hash dropped, tensors and content hash intact, is
    refused like one whose hash does not match."""
    from safetensors.torch import save as st_save

    src = ck_run / "run" / "checkpoints" / "latest.safetensors"
    ck = checkpoint.load_checkpoint(src)
    assert len(ck.meta["header_sha256"]) == 64 and ck.step == 3
    meta = dict(ck.meta, step=1, config={**ck.config, "lr_g": 0.5})
    for name, drop in (("no-hash", True), ("stale-hash", False)):
        edited = {k: v for k, v in meta.items() if not (drop and k == "header_sha256")}
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(st_save(ck.tensors, metadata={"ganforge": json.dumps(edited)}))
        with pytest.raises(GanforgeError, match="failed its header check"):
            checkpoint.load_checkpoint(bad)


# ----------------------------------------------------------------------------------------------
# no code path unpickles a user's file


SOURCES = sorted((ROOT / "ganforge").rglob("*.py"))


def test_no_code_path_unpickles_user_files():
    """Checkpoints, caches and directions are safetensors / .npy / .npz read with
    allow_pickle=False; the one torch.load uses weights_only=True. The one unpickler, in
    metrics/weights.py, reads the TF-Inception archive shipped in a pip package (SHA-1 checked
    first) and is restricted to tensors and inert containers (tested below)."""
    hits = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"torch\.load\(", code) and "weights_only=True" not in code:
                hits.append(f"{rel}:{i}: {line.strip()}")
            if re.search(r"\bpickle\.(loads?|Unpickler)\b|jit\.load|allow_pickle=True|"
                         r"(?<![\w.])(eval|exec)\(|marshal\.loads?", code):
                hits.append(f"{rel}:{i}: {line.strip()}")
    allowed = {"ganforge/metrics/weights.py"}  # the restricted unpickler, tested below
    assert [h for h in hits if h.split(":")[0] not in allowed] == []
    assert sum(1 for p in SOURCES if "torch.load(" in p.read_text()) <= 1


def test_inception_archive_unpickler_is_restricted(tmp_path):
    import zipfile

    from ganforge.metrics import weights

    marker = tmp_path / "MARKER"
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(_Boom(marker), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="unexpected object posix.mkdir"):
        weights.read_archive(archive)
    assert not marker.exists()
    with pytest.raises(GanforgeError, match="damaged or not the expected one"):
        weights.verify_weights(archive)  # and its SHA-1 is checked before it is read at all


# ----------------------------------------------------------------------------------------------
# data that disappears or changes under a run


def test_data_deleted_mid_run_then_resume(fmnist_dir, tmp_path):
    """Training copies the images into memory at the start, so deleting the data mid-run does
    not disturb it; resuming without the data is one clear error that changes nothing."""
    copy = tmp_path / "data"
    shutil.copytree(fmnist_dir, copy)

    def delete_data(trainer) -> None:
        if trainer.step == 2:
            shutil.rmtree(copy)

    run = tmp_path / "run"
    res = train(build_config([{"data": str(copy), **TINY, "steps": 6}]), run, progress=False,
                fault_hook=delete_data)
    assert res.step == 6 and not copy.exists()
    assert checkpoint.load_checkpoint(res.checkpoint).step == 6
    before = tree_digest(run)
    r = run_cli("train", "--out", "run", "--resume", "--steps", "9", "--no-progress",
                cwd=tmp_path)
    assert f"data source not found: {copy}" in one_line_error(r)
    assert tree_digest(run) == before
    # half-prepared: the arrays are there but meta.json is not (a prepare was killed)
    shutil.copytree(fmnist_dir, copy)
    (copy / "meta.json").unlink()
    with pytest.raises(GanforgeError, match="is an unfinished prepared data directory"):
        train(None, run, resume=True, overrides={"steps": 9}, progress=False)
    assert tree_digest(run) == before
    # moved: the user says where it went (`data` may change on resume)
    moved = tmp_path / "moved"
    shutil.copytree(fmnist_dir, moved)
    res = train(None, run, resume=True, overrides={"steps": 9, "data": str(moved)},
                progress=False)
    assert checkpoint.load_checkpoint(res.checkpoint).step == 9


def test_cache_deleted_mid_run_is_rebuilt_on_resume(tmp_path):
    """A folder source is prepared into the cache; the cache vanishing mid-run is harmless,
    and resume rebuilds it from the folder: the resumed run is bit-identical."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(items(40)):
        Image.fromarray(im).save(folder / f"{i}.png")
    cfg = build_config([{"data": str(folder), **TINY, "size": 28, "steps": 6}])
    straight = train(cfg, tmp_path / "straight", progress=False)

    def delete_cache(trainer) -> None:
        if trainer.step == 2:
            shutil.rmtree(trainer.ds.path)

    cut = build_config([{"data": str(folder), **TINY, "size": 28, "steps": 3}])
    train(cut, tmp_path / "run", progress=False, fault_hook=delete_cache)
    train(None, tmp_path / "run", resume=True, overrides={"steps": 6}, progress=False)
    a = checkpoint.load_checkpoint(straight.checkpoint).module_state("G")
    b = checkpoint.load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.safetensors")
    for k, v in a.items():
        assert torch.equal(v, b.module_state("G")[k])


# ----------------------------------------------------------------------------------------------
# full disks


class SmallDisk:
    """A directory where big writes fail. As root: a 4 MiB tmpfs, filled up to `leave` free
    bytes (ENOSPC). Without the right to mount: RLIMIT_FSIZE = `leave`, so no file may grow
    past it (EFBIG, set in the process that writes) - the same failure seen by the writer."""

    def __init__(self, path: Path):
        self.path, self.leave = path, 0
        path.mkdir()
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                               capture_output=True)
            self.tmpfs = r.returncode == 0
        except OSError:  # no mount command
            self.tmpfs = False

    def fill(self, leave: int) -> None:
        self.leave = leave
        if self.tmpfs:
            st = os.statvfs(self.path)
            free = st.f_bavail * st.f_frsize
            with open(self.path / "filler", "wb") as f:
                f.write(bytes(max(0, free - leave)))

    def free(self) -> None:
        self.leave = 0
        (self.path / "filler").unlink(missing_ok=True)

    def preexec(self):
        """For subprocess.Popen: the file-size limit in the child (no-op on tmpfs)."""
        if self.tmpfs or not self.leave:
            return None
        leave = self.leave

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (leave, resource.RLIM_INFINITY))
        return limit

    @contextlib.contextmanager
    def in_process(self):
        if self.tmpfs or not self.leave:
            yield
            return
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.leave, old[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, handler)

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.close()


def run_limited(disk: SmallDisk, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganforge", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, preexec_fn=disk.preexec())


def test_disk_full_while_writing_a_checkpoint(fmnist_dir, small_disk):
    run = small_disk.path / "run"
    train(build_config([{"data": str(fmnist_dir), **TINY, "steps": 3}]), run, progress=False)
    latest = run / "checkpoints" / "latest.safetensors"
    saved = latest.read_bytes()
    # room for the log lines and the sample grid, not for the ~1 MB checkpoint
    small_disk.fill(leave=200_000)
    r = run_limited(small_disk, "train", "--out", str(run), "--resume", "--steps", "6",
                    "--no-progress", cwd=small_disk.path)
    line = one_line_error(r)
    why = "No space left on device" if small_disk.tmpfs else "File too large"
    assert f"disk full while writing {latest} ({why})" in line
    assert latest.read_bytes() == saved and checkpoint.load_checkpoint(latest).step == 3
    assert list(run.rglob("*.tmp")) == []
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # 4-6 are trimmed on resume
    small_disk.free()  # space again: the run goes on from step 3 and loses nothing
    r = run_cli("train", "--out", str(run), "--resume", "--steps", "6", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert checkpoint.load_checkpoint(latest).step == 6
    assert [json.loads(x)["step"] for x in
            (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_disk_full_while_rewriting_a_cache(small_disk):
    out = small_disk.path / "data"
    r = run_cli("prepare", "fashion-mnist", "--out", str(out), "--limit", "300",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    old = data.load_dataset(out)
    assert len(old) == 300
    small_disk.fill(leave=400_000)  # a 1000-image cache is 784 kB
    r = run_limited(small_disk, "prepare", "fashion-mnist", "--out", str(out), "--limit",
                    "1000", "--no-progress", cwd=small_disk.path)
    assert f"disk full while writing {out / 'images-b.npy'}" in one_line_error(r)
    again = data.load_dataset(out)  # verifies the content hash
    assert len(again) == 300 and again.key == old.key
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "labels.npy", "meta.json"]
    small_disk.free()
    r = run_cli("prepare", "fashion-mnist", "--out", str(out), "--limit", "1000",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(data.load_dataset(out)) == 1000
    assert sorted(p.name for p in out.iterdir()) == ["images-b.npy", "labels-b.npy",
                                                     "meta.json"]


def test_disk_full_atomic_write_and_log_append(small_disk):
    """The writer itself: one GanforgeError naming the file, the old file intact, no temp
    file, and a log append cut short by the disk is undone (no half line)."""
    path = small_disk.path / "file.bin"
    io.write_bytes(path, b"old contents")
    log = small_disk.path / "log.jsonl"
    io.append_jsonl(log, {"step": 1})
    log_before = log.read_bytes()
    small_disk.fill(leave=len(log_before) + 16)
    with small_disk.in_process():
        with pytest.raises(GanforgeError, match=re.escape(f"disk full while writing {path}")):
            io.write_bytes(path, bytes(1_000_000))
        with pytest.raises(GanforgeError, match=re.escape(f"disk full while writing {log}")):
            io.append_jsonl(log, {"step": 2, "pad": "x" * 20_000})
    assert path.read_bytes() == b"old contents"
    assert log.read_bytes() == log_before and io.read_jsonl(log) == [{"step": 1}]
    assert [p.name for p in small_disk.path.iterdir() if p.suffix == ".tmp"] == []


def test_disk_full_error_carries_errno_words():
    e = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    err = io._write_error(e, Path("x/latest.safetensors"))
    assert isinstance(err, GanforgeError)
    assert str(err).startswith("disk full while writing x/latest.safetensors (Disk quota")


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    """A temp file left by a process killed mid-write goes at the next write into that
    directory; one of a live process (a write in progress) stays."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    host = io._HOST
    dead = tmp_path / f".latest.safetensors.{p.pid}@{host}.abc123_x.tmp"
    live = tmp_path / f".latest.safetensors.{os.getpid()}@{host}.def456_y.tmp"
    other = tmp_path / f".latest.safetensors.{p.pid}@00000000.ghi789_z.tmp"  # another host
    for f in (dead, live, other):
        f.write_bytes(b"half a checkpoint")
    io._swept.discard(str(tmp_path))
    io.write_text(tmp_path / "config.json", "{}")
    assert not dead.exists() and live.exists() and other.exists()
    # written files get the mode open() would give them, not mkstemp's private 0600
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == io._FILE_MODE
