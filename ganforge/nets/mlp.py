"""MLP GAN for small gray images (e.g. 28x28), as in the original GAN tutorials."""

from __future__ import annotations

import torch
from torch import nn


def _block(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2), nn.Dropout(dropout)]


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, size: int, channels: int, width: int = 256,
                 dropout: float = 0.3):
        super().__init__()
        self.shape = (channels, size, size)
        self.net = nn.Sequential(
            *_block(z_dim, width, dropout),
            *_block(width, width * 2, dropout),
            *_block(width * 2, width * 4, dropout),
            nn.Linear(width * 4, channels * size * size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.shape)  # [N, C, H, W]


class MLPDiscriminator(nn.Module):
    def __init__(self, size: int, channels: int, width: int = 256, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            *_block(channels * size * size, width * 4, dropout),
            *_block(width * 4, width * 2, dropout),
            *_block(width * 2, width, dropout),
            nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # [N]
