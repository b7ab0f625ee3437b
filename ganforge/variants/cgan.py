"""Class-conditional GAN: G(z, c) with the label embedding joined to z, and a projection
discriminator D(x, c) (Miyato & Koyama 2018). Works with every adversarial loss, the gradient
penalty and spectral norm, like the unconditional variants."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge.config import TrainConfig
from ganforge.nets.conditional import ConditionalGenerator, ProjectionDiscriminator
from ganforge.variants.base import Batch, Stats, Variant, adversarial_g


class CGAN(Variant):
    name = "cgan"
    kind = "conditional"
    description = "class-conditional: [z, embed(c)] -> DCGAN G, projection D, hinge + SN"
    defaults = dict(loss="hinge", d_norm="spectral", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.0, beta2=0.9, n_critic=1)

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 10) -> dict[str, nn.Module]:
        n_classes = n_classes or 10
        return {"G": ConditionalGenerator(cfg.z_dim, n_classes, cfg.embed_dim or cfg.z_dim,
                                          size, channels, cfg.g_width, cfg.max_width),
                "D": ProjectionDiscriminator(n_classes, size, channels, cfg.d_width,
                                             cfg.max_width, cfg.d_norm)}

    def load_data(self, cfg: TrainConfig, progress: bool = True) -> Any:
        from ganforge.data_cond import TrainData, resolve_labelled

        ds = resolve_labelled(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                              progress=progress)
        return TrainData(parts=[{"real": ds.images, "label": ds.labels}], size=ds.size,
                         channels=ds.channels, key=ds.key, split=ds.split, ref=ds,
                         classes=list(ds.meta["classes"]))

    def sample_inputs(self, n: int, cfg: TrainConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu", n_classes: int = 0) -> Batch:
        z = self.sample_z(n, cfg, generator, device)
        c = torch.randint(0, max(n_classes, 1), (n,), generator=generator, device=device)
        return {"z": z, "c": c}

    def fixed_inputs(self, cfg: TrainConfig, n_classes: int, parts: list[dict[str, Any]],
                     generator: torch.Generator) -> Batch:
        """One row per class; column j uses the same z in every row."""
        cols = max(1, cfg.grid_size // n_classes)
        z = self.sample_z(cols, cfg, generator).repeat(n_classes, 1)  # [classes*cols, z_dim]
        c = torch.arange(n_classes).repeat_interleave(cols)
        return {"z": z, "c": c}

    def show(self, G: nn.Module, fixed: Batch) -> tuple[torch.Tensor, int | None]:
        cols = int((fixed["c"] == 0).sum())
        return G(fixed["z"], fixed["c"].to(fixed["z"].device)), cols

    def d_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch) -> tuple[torch.Tensor, Stats]:
        # Fakes carry the real batch's labels, so D (and the penalty's mixes) compare like
        # with like; the G step draws its labels uniformly.
        G, D = nets["G"], nets["D"]
        real, y = batch["real"], batch["label"]
        with torch.no_grad():
            fake = G(inputs["z"], y).float()
        loss, stats = self.critic_loss(lambda x: D(x, y), cfg, real, fake)
        stats["loss_D"] = loss.detach()
        return loss, stats

    def g_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch) -> tuple[torch.Tensor, Stats]:
        fake = nets["G"](inputs["z"], inputs["c"])
        loss = adversarial_g(cfg, nets["D"](fake, inputs["c"]))
        return loss, {"loss_G": loss.detach()}



