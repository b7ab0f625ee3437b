"""Small building blocks shared by the networks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations


class InstanceNorm2dFloat32(nn.InstanceNorm2d):
    """InstanceNorm2d computed in float32 under autocast (the same parameters and keys).

    Its double backward (a gradient penalty's) computes in the input's dtype, 1/std³ among
    it; in float16 that overflows, so with amp=fp16 every step of a penalised critic had
    non-finite gradients and was skipped, at any loss scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def norm2d(kind: str, channels: int, spatial: int) -> nn.Module:
    """A 2-d normalisation layer by name: batch, instance (affine), layer, none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return InstanceNorm2dFloat32(channels, affine=True)
    if kind == "layer":
        # LayerNorm over (C, H, W) per sample: keeps WGAN-GP's per-sample gradients independent.
        return nn.GroupNorm(1, channels)
    if kind in ("none", "spectral"):
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def maybe_sn(layer: nn.Module, spectral: bool) -> nn.Module:
    return parametrizations.spectral_norm(layer) if spectral else layer


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") \
                else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.InstanceNorm2d)):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018, section 3): splits the batch
    into groups of `group` images (strided: image i is in group i mod N/group), takes each
    feature's standard deviation within its group, averages it over features and positions
    and appends that one number as a constant extra channel. D then sees how varied a batch
    is, which a batch of collapsed fakes is not. A batch that `group` does not divide uses
    the largest group size below it that does."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group, n)
        while n % g:
            g -= 1
        y = x.float().reshape(g, n // g, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [N/g, C, H, W]
        y = y.mean(dim=(1, 2, 3)).reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w)
        return torch.cat([x, y.reshape(n, 1, h, w).to(x.dtype)], dim=1)  # [N, C + 1, H, W]
