"""CycleGAN's ResNet generator (Johnson et al. style: c7s1-w, two stride-2 downs, residual
blocks, two ups, c7s1-C; InstanceNorm, reflection padding) and the two-way container that
holds CycleGAN's G: A->B and F: B->A as one generator group (and its two critics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.nets.layers import init_dcgan_weights


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """[N, C, H, W] -> [N, C, H, W] in [-1, 1]; sizes not divisible by 4 are padded."""

    def __init__(self, channels: int, size: int, width: int = 64, blocks: int = 6,
                 max_width: int = 512):
        super().__init__()
        self.size = size
        w1, w2, w3 = width, min(2 * width, max_width), min(4 * width, max_width)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(channels, w1, 7), nn.InstanceNorm2d(w1),
            nn.ReLU(True),
            nn.Conv2d(w1, w2, 3, 2, 1), nn.InstanceNorm2d(w2), nn.ReLU(True),
            nn.Conv2d(w2, w3, 3, 2, 1), nn.InstanceNorm2d(w3), nn.ReLU(True),
            *[_ResBlock(w3) for _ in range(blocks)],
            nn.ConvTranspose2d(w3, w2, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(w2),
            nn.ReLU(True),
            nn.ConvTranspose2d(w2, w1, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(w1),
            nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(w1, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = -self.size % 4
        if pad:
            x = F.pad(x, (0, pad, 0, pad), mode="replicate")
        return self.net(x)[..., : self.size, : self.size]


class GeneratorPair(nn.Module):
    """CycleGAN's G group: `a2b` (G: A->B) and `b2a` (F: B->A); `forward` is A->B."""

    def __init__(self, a2b: nn.Module, b2a: nn.Module):
        super().__init__()
        self.a2b, self.b2a = a2b, b2a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a2b(x)


class CriticPair(nn.Module):
    """CycleGAN's D group: `a` judges domain A images, `b` domain B images."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(x)
