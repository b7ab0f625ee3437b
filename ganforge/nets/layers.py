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
