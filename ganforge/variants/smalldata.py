"""The small-data variant (FastGAN-style, Liu et al. 2021): a light G with skip-layer
excitation, a D regularised by reconstructing the real images from its own features, hinge."""

from __future__ import annotations

import torch
from torch import nn

from ganforge import losses
from ganforge.config import TrainConfig
from ganforge.nets import SmallDataDiscriminator, SmallDataGenerator
from ganforge.variants.base import Stats, Variant, adversarial_d, penalties


def reconstruction_loss(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean L1 over D's (reconstruction, target) pairs: the paper's pixel-level part of its
    reconstruction loss (its LPIPS part would need a pretrained network)."""
    return sum(losses.l1(rec, target.detach()) for rec, target in pairs) / len(pairs)


class SmallData(Variant):
    name = "small-data"
    description = ("FastGAN-style small-data GAN: skip-layer excitation G, D with reconstruction "
                   "decoders (L1 pixel loss on real images), hinge, Adam 2e-4 (0.5, 0.999)")
    # recon_weight 1 is the paper's. Measured on the Pokémon sprites (64 px, 10 CPU minutes,
    # batch 16, lr 1e-3, bf16, one run each): fid1k 196 with it, 168 without (2,373 steps
    # instead of 1,967) - at that length D does not yet overfit, so the regulariser is cost
    # only; it is meant for long runs, where D memorises a few hundred images.
    defaults = dict(loss="hinge", d_norm="batch", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.5, beta2=0.999, n_critic=1, g_width=32, d_width=32,
                    recon_weight=1.0)

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        return {"G": SmallDataGenerator(cfg.z_dim, size, channels, cfg.g_width, cfg.max_width),
                "D": SmallDataDiscriminator(size, channels, cfg.d_width, cfg.max_width,
                                            cfg.d_norm, spectral=True,
                                            input_norm=cfg.d_input_norm)}

    def d_loss(self, nets: dict[str, nn.Module], cfg: TrainConfig, real: torch.Tensor,
               fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        D = nets["D"]
        stats: Stats = {}
        if cfg.recon_weight > 0:
            # the reconstruction rides on D's forward call, so a wrapper that augments D's
            # input (DiffAugment) makes D reconstruct the augmented images it saw
            out_real, pairs = D(real, recon=True)
            loss_recon = reconstruction_loss(pairs)
            stats["loss_recon"] = loss_recon.detach()
        else:
            out_real, loss_recon = D(real), 0.0
        out_fake = D(fake)
        stats.update(self.judge(cfg, out_real.detach(), out_fake.detach()))
        loss = (adversarial_d(cfg, out_real, out_fake) + cfg.recon_weight * loss_recon
                + penalties(D, cfg, real, fake, stats))
        stats["loss_D"] = loss.detach()
        return loss, stats
