"""pix2pix (Isola et al. 2017): paired translation A -> B. U-Net G, PatchGAN D that judges
(condition, image) pairs, GAN loss + λ·L1 to the true target (λ = 100), Adam 2e-4 (0.5, 0.999).
D's objective is halved, as in the paper, to slow D relative to G."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge import losses
from ganforge.config import TrainConfig
from ganforge.nets.patchgan import PatchDiscriminator
from ganforge.nets.unet import UNetGenerator
from ganforge.variants.base import Batch, Stats, Variant, adversarial_g

GRID_COLUMNS = 8


class Pix2Pix(Variant):
    name = "pix2pix"
    kind = "translation"
    directions = ("a2b",)
    description = "pix2pix: U-Net G, PatchGAN D on (A, B) pairs, BCE + 100·L1, Adam 2e-4"
    defaults = dict(loss="bce", d_norm="batch", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.5, beta2=0.999, n_critic=1, l1_weight=100.0)

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        return {"G": UNetGenerator(channels, channels, size, cfg.g_width, cfg.max_width),
                "D": PatchDiscriminator(2 * channels, size, cfg.d_width, cfg.max_width,
                                        cfg.d_norm)}

    def load_data(self, cfg: TrainConfig, progress: bool = True) -> Any:
        from ganforge.data_cond import TrainData, resolve_paired

        p = resolve_paired(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                           progress=progress)
        return TrainData(parts=[{"A": p.a.images, "B": p.b.images}], size=p.a.size,
                         channels=p.a.channels, key=p.key, split=p.meta["split"], ref=p.b)

    def sample_inputs(self, n: int, cfg: TrainConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu", n_classes: int = 0) -> Batch:
        return {}  # the condition is the input; pix2pix's noise is G's dropout

    def fixed_inputs(self, cfg: TrainConfig, n_classes: int, parts: list[dict[str, Any]],
                     generator: torch.Generator) -> Batch:
        return fixed_images(parts, min(GRID_COLUMNS, cfg.grid_size))

    def translate(self, G: nn.Module, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return G(x)

    def show(self, G: nn.Module, fixed: Batch) -> tuple[torch.Tensor, int | None]:
        """Rows: input A, translation G(A), target B."""
        A, B = fixed["A"], fixed["B"]
        return torch.cat([A, G(A), B]), len(A)

    def d_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        G, D = nets["G"], nets["D"]
        A, B = batch["A"], batch["B"]
        with torch.no_grad():
            fake = G(A).float()
        loss, stats = self.critic_loss(lambda x: D(x, A), cfg, B, fake)
        loss = 0.5 * loss
        stats["loss_D"] = loss.detach()
        return loss, stats

    def g_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        A, B = batch["A"], batch["B"]
        fake = nets["G"](A)
        adv = adversarial_g(cfg, nets["D"](fake, A))
        l1 = losses.l1(fake, B)
        loss = adv + cfg.l1_weight * l1
        return loss, {"loss_G": loss.detach(), "loss_G_adv": adv.detach(), "l1": l1.detach()}


def fixed_images(parts: list[dict[str, Any]], n: int) -> Batch:
    """The first n images of every image array in `parts`, as [-1, 1] tensors [n, C, H, W]."""
    out = {}
    for part in parts:
        for k, arr in part.items():
            if arr.ndim == 4:
                x = torch.from_numpy(arr[:n].copy()).permute(0, 3, 1, 2)
                out[k] = x.float() / 127.5 - 1.0
    return out
