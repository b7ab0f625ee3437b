"""Conditional GAN: G(z, c) with the condition's embedding joined to z and setting G's
BatchNorm scales and shifts, and a projection discriminator D(x, c) (Miyato & Koyama 2018).
Works with every adversarial loss, the gradient penalty and spectral norm, like the
unconditional variants.

The condition is a class label (`condition=label`) or a caption (`condition=text`): each
training image is captioned by one of its class's phrasings, drawn afresh every time, whose
frozen sentence embedding (ganforge.text, computed once at the start) G and D see through a
learned projection. A class index then stands for the mean embedding of its captions, so
grids, `sample --class`, evaluation and the explorer work unchanged, and `sample --prompt`
embeds any phrase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.config import TrainConfig
from ganforge.nets.conditional import ConditionalGenerator, ProjectionDiscriminator
from ganforge.variants.base import Batch, Stats, Variant, adversarial_g


class CGAN(Variant):
    name = "cgan"
    kind = "conditional"
    net_keys = ("d_convs",)  # no g_convs in its conditional G, no d_mbstd in its projection
    description = ("conditional (class label or caption): [z, embed(c)] -> DCGAN G with "
                   "conditional BatchNorm, projection D, hinge + SN")
    # mode_seeking 0.1: without it, G ignores z at short budgets (one image per class)
    defaults = dict(loss="hinge", d_norm="spectral", optimizer="adam", lr_g=2e-4, lr_d=2e-4,
                    beta1=0.0, beta2=0.9, n_critic=1, mode_seeking=0.1)

    def __init__(self) -> None:
        # load_data embeds the captions once; build (called next by the loop) uses them
        self._captions: tuple[tuple[str, str, str, int], Any] | None = None

    @staticmethod
    def _caption_key(cfg: TrainConfig, n_classes: int) -> tuple[str, str, str, int]:
        return (cfg.data, cfg.captions, cfg.text_model, n_classes)

    def check(self, cfg: TrainConfig) -> None:
        super().check(cfg)
        if cfg.condition == "text":
            from ganforge.text import text_model

            text_model(cfg.text_model)  # a clear error for an unknown name, before any data

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 10) -> dict[str, nn.Module]:
        """The nets. With condition=text and no captions loaded by `load_data` (rebuilding a
        generator from a checkpoint), G's caption buffers are placeholders for the saved ones."""
        n_classes = n_classes or 10
        text_dim = 0
        if cfg.condition == "text":
            from ganforge.text import text_dim as dim_of

            text_dim = dim_of(cfg.text_model)
        G = ConditionalGenerator(cfg.z_dim, n_classes, cfg.embed_dim or cfg.z_dim, size,
                                 channels, cfg.g_width, cfg.max_width, text_dim=text_dim,
                                 cond_norm=cfg.cond_norm)
        D = ProjectionDiscriminator(n_classes, size, channels, cfg.d_width, cfg.max_width,
                                    cfg.d_norm, text_dim=text_dim, convs=cfg.d_convs)
        if text_dim and self._captions is not None \
                and self._captions[0] == self._caption_key(cfg, n_classes):
            bank = self._captions[1]
            G.set_captions(bank.emb, bank.phrase_class)
            D.text_center.copy_(G.text_center)
        return {"G": G, "D": D}

    def load_data(self, cfg: TrainConfig, progress: bool = True) -> Any:
        from ganforge.data_cond import TrainData, resolve_labelled

        ds = resolve_labelled(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                              progress=progress, mirror=cfg.mirror)
        classes = list(ds.meta["classes"])
        if cfg.condition == "text":
            from ganforge import text

            folders = [Path(cfg.data), Path(str(ds.meta.get("source", "")))]
            captions = text.class_captions(classes, [d for d in folders if d.is_dir()],
                                           cfg.captions)
            bank = text.caption_bank(captions, classes, cfg.text_model)
            self._captions = (self._caption_key(cfg, len(classes)), bank)
            if progress:
                print(f"captions: {len(bank.phrases)} phrasings of {len(classes)} classes "
                      f"embedded by {cfg.text_model}")
        return TrainData(parts=[{"real": ds.images, "label": ds.labels}], size=ds.size,
                         channels=ds.channels, key=ds.key, split=ds.split, ref=ds,
                         classes=classes)

    def sample_inputs(self, n: int, cfg: TrainConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu", n_classes: int = 0) -> Batch:
        z = self.sample_z(n, cfg, generator, device)
        c = torch.randint(0, max(n_classes, 1), (n,), generator=generator, device=device)
        if cfg.condition != "text":
            return {"z": z, "c": c}
        # u picks each sample's caption among its class's phrasings (CaptionTable.pick)
        return {"z": z, "c": c, "u": torch.rand(n, generator=generator, device=device)}

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

    @staticmethod
    def _condition(nets: dict[str, nn.Module], cfg: TrainConfig, y: torch.Tensor,
                   inputs: Batch) -> torch.Tensor:
        """What G and D are conditioned on: the labels, or a caption embedding per sample."""
        if cfg.condition != "text":
            return y
        return nets["G"].captions.pick(y, inputs["u"])  # [N, text_dim]

    def d_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        # Fakes carry the real batch's labels (and captions), so D (and the penalty's mixes)
        # compare like with like; the G step draws its labels uniformly.
        G, D = nets["G"], nets["D"]
        c = self._condition(nets, cfg, batch["label"], inputs)
        with torch.no_grad():
            fake = G(inputs["z"], c).float()
        loss, stats = self.critic_loss(lambda x: D(x, c), cfg, batch["real"], fake)
        stats["loss_D"] = loss.detach()
        return loss, stats

    def g_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        z, y, n = inputs["z"], inputs["c"], inputs["z"].shape[0] // 2
        if cfg.mode_seeking > 0 and n:
            # pairs (i, n + i) share their condition and differ in z
            inputs = {k: torch.cat([v[:n], v[:n], v[2 * n:]]) if k != "z" else v
                      for k, v in inputs.items()}
            y = inputs["c"]
        c = self._condition(nets, cfg, y, inputs)
        fake = nets["G"](z, c)
        loss = adversarial_g(cfg, nets["D"](fake, c))
        stats = {"loss_G": loss.detach()}
        if cfg.mode_seeking > 0 and n:
            ratio = (fake[:n] - fake[n:2 * n]).abs().mean() / (z[:n] - z[n:2 * n]).abs().mean()
            loss = loss + cfg.mode_seeking / (ratio + 1e-5)
            stats["mode_seeking_ratio"] = ratio.detach()
        return loss, stats
