"""The unconditional family of SPEC section 1: MLP GAN, DCGAN, WGAN, WGAN-GP, SNGAN."""

from __future__ import annotations

from torch import nn

from ganforge.config import TrainConfig
from ganforge.nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from ganforge.variants.base import DCGAN_NET_KEYS, Variant


class MLPGAN(Variant):
    name = "mlp"
    description = "MLP G and D (LeakyReLU 0.2, dropout 0.3), BCE with one-sided smoothing 0.9"
    defaults = dict(loss="bce", real_label=0.9, optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.5, beta2=0.999, n_critic=1, g_width=256, d_width=256, dropout=0.3)

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        return {"G": MLPGenerator(cfg.z_dim, size, channels, cfg.g_width, cfg.dropout),
                "D": MLPDiscriminator(size, channels, cfg.d_width, cfg.dropout)}


class _ConvVariant(Variant):
    net_keys = DCGAN_NET_KEYS

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        return {"G": DCGANGenerator(cfg.z_dim, size, channels, cfg.g_width, cfg.max_width,
                                    cfg.g_convs, cfg.g_upsample, cfg.g_selfmod),
                "D": DCGANDiscriminator(size, channels, cfg.d_width, cfg.max_width,
                                        cfg.d_norm, cfg.d_convs, cfg.d_mbstd,
                                        cfg.d_first_norm)}


class DCGAN(_ConvVariant):
    name = "dcgan"
    description = "DCGAN: conv G/D with BatchNorm, non-saturating BCE, Adam 2e-4 (0.5, 0.999)"
    defaults = dict(loss="bce", real_label=1.0, d_norm="batch", optimizer="adam", lr_g=2e-4,
                    lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1)


class WGAN(_ConvVariant):
    name = "wgan"
    description = "WGAN: DCGAN nets, critic without sigmoid, weights clipped to ±0.01, RMSprop"
    defaults = dict(loss="wasserstein", d_norm="batch", clip_value=0.01, optimizer="rmsprop",
                    lr_g=5e-5, lr_d=5e-5, n_critic=5)


class WGANGP(_ConvVariant):
    name = "wgan-gp"
    description = "WGAN-GP: no BatchNorm in the critic (InstanceNorm), λ=10, Adam 1e-4 (0, 0.9)"
    defaults = dict(loss="wasserstein", d_norm="instance", gp_weight=10.0, optimizer="adam",
                    lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9, n_critic=5)


class SNGAN(_ConvVariant):
    name = "sngan"
    description = "SNGAN: spectral-normalised critic, hinge loss, Adam 2e-4 (0, 0.9)"
    defaults = dict(loss="hinge", d_norm="spectral", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.0, beta2=0.9, n_critic=1)
