"""Class-conditional networks: a DCGAN generator fed [z, embed(c)], and a projection
discriminator (Miyato & Koyama 2018): D(x, c) = ψ(φ(x)) + <embed(c), Σ_hw φ(x)>."""

from __future__ import annotations

import torch
from torch import nn

from ganforge.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.nets.layers import maybe_sn


class ConditionalGenerator(nn.Module):
    """G(z [N, z_dim], c [N] int) -> images [N, C, H, W]: the label's embedding is joined to z
    and the DCGAN generator does the rest."""

    def __init__(self, z_dim: int, n_classes: int, embed_dim: int, size: int, channels: int,
                 width: int = 64, max_width: int = 512):
        super().__init__()
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes, embed_dim)
        nn.init.normal_(self.embed.weight, 0.0, 1.0)  # on the scale of z
        self.net = DCGANGenerator(z_dim + embed_dim, size, channels, width, max_width)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(c)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """D(x, c) -> [N]: the DCGAN discriminator's logit plus the inner product of the class
    embedding with the spatially summed last features."""

    def __init__(self, n_classes: int, size: int, channels: int, width: int = 64,
                 max_width: int = 512, norm: str = "batch"):
        super().__init__()
        self.base = DCGANDiscriminator(size, channels, width, max_width, norm)
        feat = self.base.head.in_features if not hasattr(self.base.head, "parametrizations") \
            else self.base.head.parametrizations.weight.original.shape[1]
        n_feat = self._feature_channels(feat)
        self.embed = maybe_sn(nn.Embedding(n_classes, n_feat), norm == "spectral")
        emb = self.embed.parametrizations.weight.original if hasattr(
            self.embed, "parametrizations") else self.embed.weight
        nn.init.normal_(emb, 0.0, 0.02)

    def _feature_channels(self, flat: int) -> int:
        convs = [m for m in self.base.features.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels if convs else flat

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f = self.base.features(x)  # [N, F, s, s]
        out = self.base.head(f.flatten(1)).squeeze(1)  # [N]
        return out + (self.embed(c) * f.sum(dim=(2, 3))).sum(1)


class CycledClasses(nn.Module):
    """An unconditional view of a conditional G for metrics: G(z) with the labels
    0, 1, ..., n-1, 0, 1, ... along the batch, so every class is scored equally often."""

    def __init__(self, G: nn.Module, n_classes: int):
        super().__init__()
        self.G, self.n_classes = G, n_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = torch.arange(z.shape[0], device=z.device) % self.n_classes
        return self.G(z, c)
