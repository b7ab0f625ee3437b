"""Self-modulated BatchNorm for generators (Chen, Lucic, Houlsby and Gelly, "On Self
Modulation for Generative Adversarial Networks", ICLR 2019).

A plain BatchNorm in G learns one scale and shift per channel, the same for every sample; z
reaches the layers after the first only through the feature maps. Self-modulation normalises
without parameters of its own and computes each sample's scale and shift from its z, through
a small MLP per layer:

    y = BN(x) * (1 + gamma(z)) + beta(z)

so every layer of G sees z directly. It costs a few thousand multiply-adds per sample. With
the DCGAN initialisation (weights N(0, 0.02), zero biases) gamma and beta start near 0, so a
fresh self-modulated G computes about what a fresh plain one does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

HIDDEN = 32  # the paper's MLP: one hidden layer of 32 ReLU units


class SelfModulatedBatchNorm2d(nn.Module):
    def __init__(self, channels: int, z_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.mlp = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * channels))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(z)[:, :, None, None].chunk(2, dim=1)  # [N, C, 1, 1] each
        return self.norm(x) * (1 + gamma) + beta


def modulated(layers: Iterable[nn.Module], x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Run `layers` in order on `x`, giving the self-modulated ones the latent `z` too."""
    for layer in layers:
        x = layer(x, z) if isinstance(layer, SelfModulatedBatchNorm2d) else layer(x)
    return x
