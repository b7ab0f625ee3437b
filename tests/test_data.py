"""prepare: every image kind is decoded, bad files are skipped with a reason, never fatal."""

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from ganforge import data
from ganforge.errors import GanforgeError


def _real_items(n, split="test"):
    img_path, _ = data.fashion_mnist_files(split)
    return data.read_idx(img_path)[:n]


@pytest.fixture
def mixed_folder(tmp_path):
    """Real Fashion-MNIST items saved in many modes, plus broken files, in nested folders."""
    items = _real_items(12)
    root = tmp_path / "imgs"
    (root / "deep" / "er").mkdir(parents=True)
    Image.fromarray(items[0]).save(root / "gray.png")
    Image.fromarray(np.stack([items[1]] * 3, -1)).save(root / "rgb.jpg", quality=95)
    rgba = np.dstack([np.stack([items[2]] * 3, -1), np.full((28, 28), 128, np.uint8)])
    Image.fromarray(rgba).save(root / "deep" / "rgba.png")
    Image.fromarray(np.stack([items[3]] * 3, -1)).convert("P").save(root / "pal.gif")
    Image.fromarray(items[4].astype(np.uint16) * 257).save(root / "deep" / "er" /
                                                                   "sixteen.png")
    Image.fromarray(np.stack([items[5]] * 3, -1)).save(root / "im.webp")
    Image.fromarray(np.stack([items[6]] * 3, -1)).save(root / "im.bmp")
    Image.fromarray(np.stack([items[7]] * 3, -1)).convert("CMYK").save(root / "cmyk.jpg")
    frames = [Image.fromarray(items[8]), Image.fromarray(items[9])]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("this is not an image")
    good = root / "gray.png"
    (root / "truncated.png").write_bytes(good.read_bytes()[:60])
    Image.new("L", (1, 1)).save(root / "tiny.png")
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_prepare_folder_reports_used_and_skipped(mixed_folder, tmp_path):
    ds = data.prepare(str(mixed_folder), tmp_path / "out", size=32, progress=False)
    skipped = {s["path"]: s["reason"] for s in ds.meta["skipped"]}
    assert set(skipped) == {"zero.png", "text.png", "truncated.png", "tiny.png"}
    assert "empty" in skipped["zero.png"]
    assert "not an image" in skipped["text.png"]
    assert "too small" in skipped["tiny.png"]
    assert len(ds) == 9 and ds.meta["files_seen"] == 13
    assert ds.images.shape == (9, 32, 32, 3) and ds.images.dtype == np.uint8
    report = data.describe(ds)
    assert "prepared 9 images" in report and "skipped 4 of 13" in report
    # RGBA composited on white: the transparent-ish item gets lighter than the opaque one
    assert ds.images.mean() > 0


def test_prepare_is_faithful_to_the_pixels(tmp_path):
    items = _real_items(3)
    folder = tmp_path / "g"
    folder.mkdir()
    for i, im in enumerate(items):
        Image.fromarray(im).save(folder / f"{i}.png")
    ds = data.prepare(str(folder), tmp_path / "out", size=28, progress=False)
    assert ds.channels == 1  # gray-only source stays gray
    np.testing.assert_array_equal(ds.images[..., 0], items)


def test_center_crop_fraction(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[10:30, 10:30] = 255  # a white centre square of half the side
    folder = tmp_path / "c"
    folder.mkdir()
    Image.fromarray(a).save(folder / "sq.png")
    ds = data.prepare(str(folder), tmp_path / "out", size=20, crop=0.5, progress=False)
    assert ds.images.min() == 255  # only the centre is left


def test_limit_and_per_folder(tmp_path):
    items = _real_items(12)
    for person in range(4):
        d = tmp_path / "people" / f"p{person}"
        d.mkdir(parents=True)
        for j in range(3):
            Image.fromarray(items[person * 3 + j]).save(d / f"{j}.png")
    ds = data.prepare(str(tmp_path / "people"), tmp_path / "o1", size=28, per_folder=2,
                      progress=False)
    assert len(ds) == 8
    ds = data.prepare(str(tmp_path / "people"), tmp_path / "o2", size=28, per_folder=2, limit=5,
                      progress=False)
    assert len(ds) == 5


def test_fashion_mnist_builtin_and_idx_file(tmp_path):
    ds = data.prepare("fashion-mnist:test", tmp_path / "fm", limit=50, progress=False)
    assert ds.images.shape == (50, 28, 28, 1) and ds.labels.shape == (50,)
    assert ds.split == "test"
    np.testing.assert_array_equal(ds.images[..., 0], _real_items(50))
    raw = _real_items(20)
    idx = tmp_path / "mine-idx3-ubyte.gz"
    idx.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 20, 28, 28) +
                                  raw.tobytes()))
    ds2 = data.prepare(str(idx), tmp_path / "idx", size=32, channels=3, progress=False)
    assert ds2.images.shape == (20, 32, 32, 3)


def test_fashion_mnist_from_the_directory_the_environment_names(tmp_path, monkeypatch):
    """GANFORGE_FASHION_MNIST (files carried to a machine without network) comes first; a
    directory without the files is an error naming the variable, never a download."""
    items, labels = _real_items(7), np.arange(7, dtype=np.uint8)
    named = tmp_path / "carried"
    named.mkdir()
    img, _, lbl, _ = data.FASHION_MNIST_FILES["test"]
    (named / img).write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 7, 28, 28)
                                            + items.tobytes()))
    (named / lbl).write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 7)
                                            + labels.tobytes()))
    monkeypatch.setenv("GANFORGE_FASHION_MNIST", str(named))
    ds = data.prepare("fashion-mnist:test", tmp_path / "fm", progress=False)
    assert len(ds) == 7 and ds.labels.tolist() == list(range(7))
    np.testing.assert_array_equal(ds.images[..., 0], items)
    with pytest.raises(GanforgeError, match="GANFORGE_FASHION_MNIST=.*train-images"):
        data.fashion_mnist_files("train")


def test_truncated_idx_is_a_clear_error(tmp_path):
    idx = tmp_path / "bad-idx3-ubyte"
    idx.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 20, 28, 28) + b"\0" * 100)
    with pytest.raises(GanforgeError, match="truncated"):
        data.prepare(str(idx), tmp_path / "o", progress=False)


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanforgeError, match="no image files"):
        data.prepare(str(tmp_path / "empty"), tmp_path / "o", progress=False)
    with pytest.raises(GanforgeError, match="not found"):
        data.prepare(str(tmp_path / "nope"), tmp_path / "o", progress=False)
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "a.png").write_text("no")
    with pytest.raises(GanforgeError, match="none of the 1 image files"):
        data.prepare(str(bad), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "meta.json").exists()


def test_cache_detects_tampering_and_failed_prepare_keeps_old_cache(fmnist_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fmnist_dir, copy)
    before = (copy / "images.npy").read_bytes()
    with pytest.raises(GanforgeError):
        data.prepare(str(tmp_path / "missing"), copy, progress=False)
    assert (copy / "images.npy").read_bytes() == before
    data.load_dataset(copy)  # still valid
    arr = np.load(copy / "images.npy")
    arr[0, 0, 0, 0] ^= 1
    np.save(copy / "images.npy", arr)
    with pytest.raises(GanforgeError, match="modified"):
        data.load_dataset(copy)
    meta = json.loads((copy / "meta.json").read_text())
    assert meta["count"] == 300


def test_resolve_prepares_once_and_reuses_the_cache(tmp_path):
    items = _real_items(10)
    folder = tmp_path / "f"
    folder.mkdir()
    for i, im in enumerate(items):
        Image.fromarray(im).save(folder / f"{i}.png")
    a = data.resolve(str(folder), size=28, progress=False)
    b = data.resolve(str(folder), size=28, progress=False)
    assert a.path == b.path and a.key == b.key
    Image.fromarray(items[0]).save(folder / "new.png")
    c = data.resolve(str(folder), size=28, progress=False)
    assert c.path != a.path and len(c) == 11


def test_mirror_adds_each_image_mirrored(color_folder, tmp_path):
    """--mirror: the cache holds the images, then the same images flipped left-right (checked
    against PIL's own mirror of the decoded file), labels twice for a labelled folder."""
    from PIL import ImageOps

    from ganforge.cli import main
    from ganforge.data_cond import prepare_labelled

    plain = data.prepare(str(color_folder), tmp_path / "plain", size=24)
    assert main(["prepare", str(color_folder), "--out", str(tmp_path / "m"), "--size", "24",
                 "--mirror", "--no-progress"]) == 0
    mirrored = data.load_dataset(tmp_path / "m")
    n = len(plain)
    assert len(mirrored) == 2 * n and mirrored.meta["mirror"] is True
    assert np.array_equal(mirrored.images[:n], plain.images)
    first = sorted(p for p in color_folder.rglob("*") if p.is_file())[0]
    with Image.open(first) as im:
        side = min(im.size)
        box = ((im.width - side) // 2, (im.height - side) // 2)
        crop = im.convert("RGB").crop((*box, box[0] + side, box[1] + side))
        expected = np.asarray(ImageOps.mirror(crop.resize((24, 24), Image.Resampling.LANCZOS)))
    assert np.array_equal(mirrored.images[n], expected)
    lab = prepare_labelled(color_folder, tmp_path / "lab", size=24, mirror=True)
    half = len(lab) // 2
    assert np.array_equal(lab.labels[:half], lab.labels[half:])
    assert np.array_equal(lab.images[half:], lab.images[:half, :, ::-1])


def test_mirror_on_a_cache_prepared_without_it_is_refused(color_folder, tmp_path):
    data.prepare(str(color_folder), tmp_path / "plain", size=24)
    with pytest.raises(GanforgeError, match="without its mirror images"):
        data.resolve(str(tmp_path / "plain"), mirror=True)
    ds = data.resolve(str(color_folder), size=24, mirror=True)  # a folder: prepared mirrored
    assert ds.meta["mirror"] and len(ds) == 2 * len(data.resolve(str(color_folder), size=24))
