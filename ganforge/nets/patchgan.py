"""PatchGAN discriminator (pix2pix, CycleGAN): a fully convolutional net scoring overlapping
patches, [N, C, H, W] -> [N, 1, h, w]. pix2pix feeds it the condition and the image joined
along channels, so it judges pairs."""

from __future__ import annotations

import torch
from torch import nn

from ganforge.nets.layers import init_dcgan_weights, maybe_sn, norm2d


def patch_layers(size: int) -> int:
    """Stride-2 layers: 3 (the 70x70 PatchGAN) for images >= 64 px, fewer for small ones so
    the output map keeps at least 2x2 patches."""
    n = 3
    while n > 1 and size // 2**n < 4:
        n -= 1
    return n


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, size: int, width: int = 64, max_width: int = 512,
                 norm: str = "batch"):
        super().__init__()
        sn = norm == "spectral"
        n = patch_layers(size)
        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(in_channels, width, 4, 2, 1), sn),
                                   nn.LeakyReLU(0.2, True)]
        c, s = width, size // 2
        for i in range(1, n + 1):
            c_out = min(width * 2 ** i, max_width)
            stride = 2 if i < n else 1  # the last hidden layer keeps the resolution
            layers += [maybe_sn(nn.Conv2d(c, c_out, 4, stride, 1, bias=norm != "batch"), sn),
                       norm2d(norm, c_out, s), nn.LeakyReLU(0.2, True)]
            c, s = c_out, s // stride
        layers.append(maybe_sn(nn.Conv2d(c, 1, 4, 1, 1), sn))
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            x = torch.cat([cond, x], dim=1)
        return self.net(x)  # [N, 1, h, w]: one score per patch
