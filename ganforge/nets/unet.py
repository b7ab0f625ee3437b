"""U-Net generator (pix2pix): an encoder-decoder with skip connections between mirrored
layers, so low-level structure (edges, layout) passes straight to the output. Any size: the
input is padded to the next power of two and the output cropped back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.nets.layers import init_dcgan_weights


class _Level(nn.Module):
    """down -> inner -> up; a middle level returns its input joined to its output (the skip)."""

    def __init__(self, c_in: int, c_inner: int, c_out: int, inner: nn.Module | None, *,
                 outermost: bool = False, dropout: bool = False):
        super().__init__()
        innermost = inner is None
        self.outermost = outermost
        down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2, True)]
        down.append(nn.Conv2d(c_in, c_inner, 4, 2, 1, bias=outermost or innermost))
        if not (outermost or innermost):
            down.append(nn.BatchNorm2d(c_inner))
        up: list[nn.Module] = [nn.ReLU(True),
                               nn.ConvTranspose2d(c_inner if innermost else 2 * c_inner, c_out,
                                                  4, 2, 1, bias=outermost)]
        if outermost:
            up.append(nn.Tanh())
        else:
            up.append(nn.BatchNorm2d(c_out))
            if dropout:
                up.append(nn.Dropout(0.5))
        self.down, self.inner, self.up = nn.Sequential(*down), inner, nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.inner is not None:
            h = self.inner(h)
        h = self.up(h)
        return h if self.outermost else torch.cat([x, h], dim=1)


class UNetGenerator(nn.Module):
    """[N, C_in, H, W] in [-1, 1] -> [N, C_out, H, W] in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, size: int, width: int = 64,
                 max_width: int = 512):
        super().__init__()
        self.size = size
        self.padded = 1 << max(3, (size - 1).bit_length())  # next power of two, >= 8
        depth = min(8, self.padded.bit_length() - 1)  # down to 1x1 (at most 8 levels)
        widths = [min(width * 2 ** i, max_width) for i in range(depth)]
        level: nn.Module | None = None
        for i in reversed(range(1, depth)):
            # dropout in the decoder levels next to the innermost one, as in the paper
            level = _Level(widths[i - 1], widths[i], widths[i - 1], level,
                           dropout=level is not None and i >= depth - 3)
        self.net = _Level(in_channels, widths[0], out_channels, level, outermost=True)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.padded - self.size
        if pad:
            x = F.pad(x, (0, pad, 0, pad), mode="replicate")
        y = self.net(x)
        return y[..., : self.size, : self.size]
