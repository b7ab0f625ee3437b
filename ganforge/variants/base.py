"""The variant interface: networks, defaults and loss math of one GAN family member."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge import losses
from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError

Stats = dict[str, torch.Tensor]


class Variant:
    """An unconditional GAN: z -> G -> image, D scores images.

    Subclasses set `name`, `description`, `defaults` (config overrides, the SPEC's values) and
    `build`. The loss is chosen by `cfg.loss` (bce / wasserstein / hinge), with an optional
    gradient penalty (`cfg.gp_weight`) and weight clipping (`cfg.clip_value`).
    """

    name: str = ""
    description: str = ""
    defaults: dict[str, Any] = {}

    def build(self, cfg: TrainConfig, size: int, channels: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    def check(self, cfg: TrainConfig) -> None:
        """Reject config combinations that make this variant wrong (raise GanforgeError)."""
        if cfg.gp_weight > 0 and cfg.d_norm == "batch":
            raise GanforgeError("a gradient penalty needs per-sample critic outputs, which "
                                "BatchNorm breaks; set d_norm to instance, layer or none")

    def sample_z(self, n: int, cfg: TrainConfig, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, cfg.z_dim, generator=generator, device=device)  # [N, z_dim]

    def threshold(self, cfg: TrainConfig, out_real: torch.Tensor,
                  out_fake: torch.Tensor) -> torch.Tensor | float:
        """The score above which D calls an image real: 0 for logits and hinge; a Wasserstein
        critic has no absolute scale, so the midpoint of its mean scores on the minibatch."""
        if cfg.loss == "wasserstein":
            return 0.5 * (out_real.mean() + out_fake.mean()).detach()
        return 0.0

    def judge(self, cfg: TrainConfig, out_real: torch.Tensor, out_fake: torch.Tensor) -> Stats:
        """How often D is right on this minibatch, and how often G fools it."""
        t = self.threshold(cfg, out_real, out_fake)
        acc_real = (out_real > t).float().mean()
        acc_fake = (out_fake <= t).float().mean()
        return {"d_acc_real": acc_real, "d_acc_fake": acc_fake, "g_fool_rate": 1.0 - acc_fake,
                "d_real": out_real.mean().detach(), "d_fake": out_fake.mean().detach()}

    def d_loss(self, nets: dict[str, nn.Module], cfg: TrainConfig, real: torch.Tensor,
               fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        D = nets["D"]
        out_real, out_fake = D(real), D(fake)
        if cfg.loss == "bce":
            loss = losses.bce_d(out_real, out_fake, cfg.real_label)
        else:
            loss = losses.D_LOSSES[cfg.loss](out_real, out_fake)
        stats = self.judge(cfg, out_real.detach(), out_fake.detach())
        if cfg.gp_weight > 0:
            gp = losses.gradient_penalty(D, real, fake)
            loss = loss + cfg.gp_weight * gp
            stats["gp"] = gp.detach()
        stats["loss_D"] = loss.detach()
        return loss, stats

    def g_loss(self, nets: dict[str, nn.Module], cfg: TrainConfig,
               fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        loss = losses.G_LOSSES[cfg.loss](nets["D"](fake))
        return loss, {"loss_G": loss.detach()}

    @torch.no_grad()
    def after_d_step(self, nets: dict[str, nn.Module], cfg: TrainConfig) -> None:
        if cfg.clip_value > 0:  # WGAN's Lipschitz constraint by weight clipping
            for p in nets["D"].parameters():
                p.clamp_(-cfg.clip_value, cfg.clip_value)
