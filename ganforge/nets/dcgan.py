"""DCGAN generator and discriminator for any square size from 8 to 1024 and 1 or 3 channels.

The generator starts from a base grid b x b (b in 3..7) and doubles it with stride-2
transposed convolutions: 28 = 7*4, 32 = 4*8, 64 = 4*16, 80 = 5*16, 128 = 4*32, 256 = 4*64.
Sizes that are not b*2^k are generated at the next such size and resized down.

`convs` adds that many 3x3 stride-1 convolutions (with the network's norm, except at D's first
resolution without `first_norm`, and activation) at every hidden resolution of either
network: 0 is the DCGAN paper's; 1 in D is the layout of SNGAN's "standard CNN" critic (a 3x3
conv beside each stride-2 one). `selfmod` makes G's BatchNorms self-modulated (each sample's
scale and shift computed from its z: ganforge.nets.selfmod).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.nets.layers import MinibatchStd, init_dcgan_weights, maybe_sn, norm2d
from ganforge.nets.selfmod import ModulatedSequential, SelfModulatedBatchNorm2d


def plan_generator(size: int) -> tuple[int, int]:
    """(base, ups): the smallest base * 2**ups >= size with base in 3..7 and ups >= 1."""
    best = None
    for ups in range(1, 12):
        for base in range(3, 8):
            native = base * 2**ups
            if native >= size and (best is None or native < best[0] * 2 ** best[1]
                                   or (native == best[0] * 2 ** best[1] and base > best[0])):
                best = (base, ups)
    assert best is not None
    return best


def _refine(width: int, convs: int, norm: Callable[[int], nn.Module]) -> list[nn.Module]:
    """`convs` x (3x3 conv, norm, ReLU) at one resolution of G."""
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), norm(width), nn.ReLU(True)]
    return layers


def _upsample(w_in: int, w_out: int, how: str, bias: bool) -> list[nn.Module]:
    """Double the resolution: the DCGAN paper's 4x4 stride-2 transposed convolution, or
    nearest-neighbour upsampling and a 3x3 convolution (Odena et al. 2016: no checkerboard
    pattern, and 9/16 of the multiply-adds)."""
    if how == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w_in, w_out, 3, 1, 1,
                                                                       bias=bias)]
    return [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=bias)]


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, size: int, channels: int, width: int = 64,
                 max_width: int = 512, convs: int = 0, upsample: str = "transposed",
                 selfmod: bool = False):
        super().__init__()
        self.size = size

        def norm(c: int) -> nn.Module:
            return SelfModulatedBatchNorm2d(c, z_dim) if selfmod else nn.BatchNorm2d(c)

        base, ups = plan_generator(size)
        widths = [min(width * 2 ** (ups - 1 - i), max_width) for i in range(ups)]
        self.base = base
        # z -> base x base grid, as a linear layer (one matmul; same as a 1x1-input ConvT)
        self.project = ModulatedSequential(
            nn.Linear(z_dim, widths[0] * base * base, bias=False),
            nn.Unflatten(1, (widths[0], base, base)),
            norm(widths[0]),
            nn.ReLU(True),
            *_refine(widths[0], convs, norm),
        )
        blocks: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            blocks += [*_upsample(w_in, w_out, upsample, bias=False),
                       norm(w_out), nn.ReLU(True), *_refine(w_out, convs, norm)]
        blocks += [*_upsample(widths[-1], channels, upsample, bias=True), nn.Tanh()]
        self.blocks = ModulatedSequential(*blocks)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.project(z, z), z)  # [N, C, base*2^ups, base*2^ups]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False)
        return x


class DCGANDiscriminator(nn.Module):
    """Stride-2 conv blocks (LeakyReLU 0.2; `norm` on all but the first) down to <= 7 px, each
    followed by `convs` 3x3 convs with `norm`, then one linear logit. The first block's 3x3
    convs are normalised only with `first_norm` (every such D until 2026-12-02; without it the
    `fast` preset scored lower FIDs, docs/BENCHMARKS.md round 12). `mbstd` > 0 appends the
    minibatch standard deviation over groups of that many images as an extra feature channel
    before the logit. norm='spectral' puts spectral normalisation on every layer."""

    def __init__(self, size: int, channels: int, width: int = 64, max_width: int = 512,
                 norm: str = "batch", convs: int = 0, mbstd: int = 0,
                 first_norm: bool = True):
        super().__init__()
        sn = norm == "spectral"
        layers: list[nn.Module] = []
        c_in, c_out, s = channels, width, size
        first = True
        while s > 7 or first:
            layers.append(maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=first or norm != "batch"),
                                   sn))
            s //= 2
            if not first:
                layers.append(norm2d(norm, c_out, s))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            normed = first_norm or not first
            for _ in range(convs):
                # a bias where no norm follows; the norm's place is kept (Identity), so the
                # keys of the layers after it stay those of the other layout
                layers += [maybe_sn(nn.Conv2d(c_out, c_out, 3, 1, 1,
                                              bias=not normed or norm != "batch"), sn),
                           norm2d(norm, c_out, s) if normed else nn.Identity(),
                           nn.LeakyReLU(0.2, inplace=True)]
            c_in, c_out, first = c_out, min(c_out * 2, max_width), False
        self.features = nn.Sequential(*layers)
        # outside `features`: its keys, and with them old checkpoints, stay as they were
        self.mbstd = MinibatchStd(mbstd) if mbstd else nn.Identity()
        self.head = maybe_sn(nn.Linear((c_in + (mbstd > 0)) * s * s, 1), sn)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mbstd(self.features(x)).flatten(1)).squeeze(1)  # [N]
