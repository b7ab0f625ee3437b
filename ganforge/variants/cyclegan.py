"""CycleGAN (Zhu et al. 2017): unpaired translation between domains A and B. Generators
G: A->B and F: B->A (ResNet blocks) form the G group, PatchGAN critics D_A, D_B the D group.
Least-squares GAN loss, cycle loss λ·(‖F(G(a))−a‖₁ + ‖G(F(b))−b‖₁) with λ = 10, an optional
identity loss, a history pool of 50 generated images per critic (one per training process,
all saved in checkpoints), and the learning rates decayed linearly to 0 over the second half of
the run."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge import losses
from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError
from ganforge.nets.patchgan import PatchDiscriminator
from ganforge.nets.pool import HistoryPool
from ganforge.nets.resnet import CriticPair, GeneratorPair, ResNetGenerator
from ganforge.variants.base import Batch, Stats, Variant, adversarial_g
from ganforge.variants.pix2pix import GRID_COLUMNS, fixed_images


class CycleGAN(Variant):
    name = "cyclegan"
    kind = "translation"
    directions = ("a2b", "b2a")
    two_domains = True
    description = "CycleGAN: ResNet G/F, PatchGAN D_A/D_B, LSGAN + 10·cycle, pool 50, lr decay"
    defaults = dict(loss="lsgan", d_norm="instance", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.5, beta2=0.999, n_critic=1, cycle_weight=10.0, pool_size=50,
                    lr_decay=0.5, batch_size=4)

    def check(self, cfg: TrainConfig) -> None:
        if not cfg.data_b:
            raise GanforgeError("cyclegan needs two image sets: --data DIR_A --data-b DIR_B")
        super().check(cfg)

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        def gen() -> nn.Module:
            return ResNetGenerator(channels, size, cfg.g_width, cfg.res_blocks, cfg.max_width)

        def critic() -> nn.Module:
            return PatchDiscriminator(channels, size, cfg.d_width, cfg.max_width, cfg.d_norm)

        return {"G": GeneratorPair(gen(), gen()), "D": CriticPair(critic(), critic()),
                "pool": HistoryPool(cfg.pool_size, channels, size)}

    def load_data(self, cfg: TrainConfig, progress: bool = True) -> Any:
        import hashlib

        from ganforge import data
        from ganforge.data_cond import TrainData

        a = data.resolve(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                         progress=progress)
        b = data.resolve(cfg.data_b, size=a.size, channels=cfg.channels, crop=cfg.crop,
                         progress=progress)
        if a.channels != b.channels:  # one gray set, one colour set: train both in colour
            a = data.resolve(cfg.data, size=a.size, channels=3, crop=cfg.crop,
                             progress=progress)
            b = data.resolve(cfg.data_b, size=a.size, channels=3, crop=cfg.crop,
                             progress=progress)
        key = hashlib.sha256(f"{a.key}|{b.key}".encode()).hexdigest()
        return TrainData(parts=[{"A": a.images}, {"B": b.images}], size=a.size,
                         channels=a.channels, key=key, split=b.split, ref=b,
                         sources={"A": cfg.data, "B": cfg.data_b})

    def sample_inputs(self, n: int, cfg: TrainConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu", n_classes: int = 0) -> Batch:
        return {}

    def fixed_inputs(self, cfg: TrainConfig, n_classes: int, parts: list[dict[str, Any]],
                     generator: torch.Generator) -> Batch:
        return fixed_images(parts, min(GRID_COLUMNS, cfg.grid_size))

    def translate(self, G: nn.Module, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return G.a2b(x) if direction == "a2b" else G.b2a(x)

    def show(self, G: nn.Module, fixed: Batch) -> tuple[torch.Tensor, int | None]:
        """Rows: A, G(A), F(G(A)), then B, F(B), G(F(B)): input, translation, reconstruction."""
        A, B = fixed["A"], fixed["B"]
        n = min(len(A), len(B))
        A, B = A[:n], B[:n]
        fake_B, fake_A = G.a2b(A), G.b2a(B)
        return torch.cat([A, fake_B, G.b2a(fake_B), B, fake_A, G.a2b(fake_A)]), n

    def d_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        G, D, pool = nets["G"], nets["D"], nets["pool"]
        A, B = batch["A"], batch["B"]
        with torch.no_grad():
            fake_B = pool.query("b", G.a2b(A).float())
            fake_A = pool.query("a", G.b2a(B).float())
        loss_b, s_b = self.critic_loss(D.b, cfg, B, fake_B)
        loss_a, s_a = self.critic_loss(D.a, cfg, A, fake_A)
        loss = 0.5 * (loss_a + loss_b)
        stats = {k: 0.5 * (s_a[k] + s_b[k]) for k in s_a}
        stats.update(loss_D=loss.detach(), loss_D_A=loss_a.detach(), loss_D_B=loss_b.detach())
        return loss, stats

    def g_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        G, D = nets["G"], nets["D"]
        A, B = batch["A"], batch["B"]
        fake_B, fake_A = G.a2b(A), G.b2a(B)
        adv = adversarial_g(cfg, D.b(fake_B)) + adversarial_g(cfg, D.a(fake_A))
        cycle = losses.l1(G.b2a(fake_B), A) + losses.l1(G.a2b(fake_A), B)
        loss = adv + cfg.cycle_weight * cycle
        stats = {"loss_G_adv": adv.detach(), "cycle": cycle.detach()}
        if cfg.identity_weight > 0:
            identity = losses.l1(G.a2b(B), B) + losses.l1(G.b2a(A), A)
            loss = loss + cfg.identity_weight * identity
            stats["identity"] = identity.detach()
        stats["loss_G"] = loss.detach()
        return loss, stats
