"""The variant interface: networks, data, generator inputs, grids and loss math of one GAN
family member. The training loop (ganforge.train) owns everything generic: optimisers (one
per group: every network under `G`, every network under `D`), backward/step, all-reduce,
EMA, AMP, logging, grids, checkpoints and the health monitor.

A training batch is a dict of tensors drawn by the loop (`real` images, `label`s, paired
`A`/`B` images: whatever `load_data` put in its parts), already this process's slice; the
generator inputs (`z`, class `c`) are drawn by `sample_inputs` for the global batch and
sliced by the loop. `d_objective` / `g_objective` return (loss, statistics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ganforge import losses
from ganforge.config import FIELDS, TrainConfig
from ganforge.errors import GanforgeError

Stats = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]


def adversarial_d(cfg: TrainConfig, out_real: torch.Tensor,
                  out_fake: torch.Tensor) -> torch.Tensor:
    """D's adversarial loss for `cfg.loss` (BCE with the configured real label)."""
    if cfg.loss == "bce":
        return losses.bce_d(out_real, out_fake, cfg.real_label)
    return losses.D_LOSSES[cfg.loss](out_real, out_fake)


def adversarial_g(cfg: TrainConfig, out_fake: torch.Tensor) -> torch.Tensor:
    return losses.G_LOSSES[cfg.loss](out_fake)


def penalties(D: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig, real: torch.Tensor,
              fake: torch.Tensor, stats: Stats) -> torch.Tensor | float:
    """The critic's regularisers `cfg` asks for, summed with their weights: WGAN-GP's
    gradient penalty (gp_weight) and R1 (r1_gamma / 2, as `lazy_r1` set it for this D step).
    Their unweighted values go into `stats`."""
    total: torch.Tensor | float = 0.0
    if cfg.gp_weight > 0:
        gp = losses.gradient_penalty(D, real, fake)
        total = total + cfg.gp_weight * gp
        stats["gp"] = gp.detach()
    if cfg.r1_gamma > 0:
        r1 = losses.r1_penalty(D, real)
        total = total + 0.5 * cfg.r1_gamma * r1
        stats["r1"] = r1.detach()
    return total


def lazy_r1(cfg: TrainConfig, d_step: int) -> TrainConfig:
    """The config D step `d_step` (counted from 0) computes its loss with: lazy R1 puts the
    penalty on every `r1_every`-th D step, weighted by r1_every so that its average pull is
    that of r1_gamma on every step, and leaves it out of the others. Without R1: `cfg`."""
    if cfg.r1_gamma <= 0 or cfg.r1_every == 1:
        return cfg
    due = d_step % cfg.r1_every == 0
    return dataclasses.replace(cfg, r1_gamma=cfg.r1_gamma * cfg.r1_every if due else 0.0)


# the options of the DCGAN-family networks (ganforge.nets.dcgan), which only some variants read
DCGAN_NET_KEYS = ("g_convs", "g_upsample", "g_selfmod", "d_convs", "d_mbstd", "d_first_norm")


class Variant:
    """An unconditional GAN: z -> G -> image, D scores images.

    Subclasses set `name`, `description`, `defaults` (config overrides, the SPEC's values) and
    `build`. The loss is chosen by `cfg.loss` (bce / wasserstein / hinge / lsgan), with an
    optional gradient penalty (`cfg.gp_weight`), R1 penalty (`cfg.r1_gamma`) and weight
    clipping (`cfg.clip_value`).
    `kind` says how the model is used: `unconditional`, `conditional` (class labels) or
    `translation` (image in, image out).
    """

    name: str = ""
    description: str = ""
    kind: str = "unconditional"
    two_domains: bool = False  # trains on two image sets (--data and --data-b)
    defaults: dict[str, Any] = {}
    # the DCGAN-family network options (DCGAN_NET_KEYS) this variant's networks read; a
    # variant refuses the others, when set, rather than ignore them
    net_keys: tuple[str, ...] = ()

    def build(self, cfg: TrainConfig, size: int, channels: int,
              n_classes: int = 0) -> dict[str, nn.Module]:
        """{"G": ..., "D": ...} plus any stateful helpers (saved, never optimised)."""
        raise NotImplementedError

    def load_data(self, cfg: TrainConfig, progress: bool = True) -> Any:
        """The training data (a ganforge.data_cond.TrainData): one part, `real` images."""
        from ganforge import data
        from ganforge.data_cond import TrainData

        ds = data.resolve(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                          progress=progress, mirror=cfg.mirror)
        return TrainData(parts=[{"real": ds.images}], size=ds.size, channels=ds.channels,
                         key=ds.key, split=ds.split, ref=ds)

    def check(self, cfg: TrainConfig) -> None:
        """Reject config combinations that make this variant wrong (raise GanforgeError)."""
        for key, what in (("gp_weight", "a gradient penalty"), ("r1_gamma", "an R1 penalty")):
            if getattr(cfg, key) > 0 and cfg.d_norm == "batch":
                raise GanforgeError(f"{what} ({key}) needs per-sample critic outputs, which "
                                    "BatchNorm breaks; set d_norm to instance, layer or none")
            if getattr(cfg, key) > 0 and cfg.d_mbstd:
                raise GanforgeError(f"{what} ({key}) needs per-sample critic outputs, which "
                                    "the minibatch standard deviation (d_mbstd) mixes; set "
                                    "d_mbstd=0")
        if self.kind != "unconditional" and cfg.schedule == "adaptive":
            raise GanforgeError(f"schedule 'adaptive' is for unconditional variants; "
                                f"{self.name} uses 'alternate'")
        if cfg.augment and self.kind == "translation":
            raise GanforgeError(f"augment is for variants that generate images from noise; "
                                f"{self.name} translates images (its D judges pairs or "
                                "domains whose alignment augmentation would break)")
        if cfg.mirror and self.kind == "translation":
            raise GanforgeError(f"mirror is for variants that generate images from noise, not "
                                f"{self.name}")
        for key in DCGAN_NET_KEYS:
            default = FIELDS[key].default
            if getattr(cfg, key) != default and key not in self.net_keys:
                raise GanforgeError(f"{key} is an option of the DCGAN-family networks; "
                                    f"{self.name} does not read it (set {key}={default})")
        if cfg.data_b and not self.two_domains:
            raise GanforgeError(f"data_b (--data-b) is for cyclegan only, not {self.name}")

    def sample_z(self, n: int, cfg: TrainConfig, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, cfg.z_dim, generator=generator, device=device)  # [N, z_dim]

    def sample_inputs(self, n: int, cfg: TrainConfig, generator: torch.Generator | None,
                      device: torch.device | str = "cpu", n_classes: int = 0) -> Batch:
        """The generator inputs for a global batch of n: {"z": [n, z_dim]}."""
        return {"z": self.sample_z(n, cfg, generator, device)}

    def fixed_inputs(self, cfg: TrainConfig, n_classes: int, parts: list[dict[str, Any]],
                     generator: torch.Generator) -> Batch:
        """The fixed inputs of the training grids (the same at every interval)."""
        return {"z": self.sample_z(cfg.grid_size, cfg, generator)}

    def show(self, G: nn.Module, fixed: Batch) -> tuple[torch.Tensor, int | None]:
        """The training grid: images [N, C, H, W] in [-1, 1] and images per row."""
        return G(fixed["z"]), None

    # -- loss math ---------------------------------------------------------------------------

    def threshold(self, cfg: TrainConfig, out_real: torch.Tensor,
                  out_fake: torch.Tensor) -> torch.Tensor | float:
        """The score above which D calls an image real: 0 for logits and hinge, 0.5 for the
        least-squares targets 0/1; a Wasserstein critic has no absolute scale, so the
        midpoint of its mean scores on the minibatch."""
        if cfg.loss == "wasserstein":
            return 0.5 * (out_real.mean() + out_fake.mean()).detach()
        return 0.5 if cfg.loss == "lsgan" else 0.0

    def judge(self, cfg: TrainConfig, out_real: torch.Tensor, out_fake: torch.Tensor) -> Stats:
        """How often D is right on this minibatch, and how often G fools it."""
        t = self.threshold(cfg, out_real, out_fake)
        acc_real = (out_real > t).float().mean()
        acc_fake = (out_fake <= t).float().mean()
        return {"d_acc_real": acc_real, "d_acc_fake": acc_fake, "g_fool_rate": 1.0 - acc_fake,
                "d_real": out_real.mean().detach(), "d_fake": out_fake.mean().detach()}

    def critic_loss(self, D: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig,
                    real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Adversarial D loss of one critic `D` (a callable on images), with the penalties
        the config asks for (`penalties`)."""
        out_real, out_fake = D(real), D(fake)
        stats = self.judge(cfg, out_real.detach(), out_fake.detach())
        loss = adversarial_d(cfg, out_real, out_fake) + penalties(D, cfg, real, fake, stats)
        return loss, stats

    def d_loss(self, nets: dict[str, nn.Module], cfg: TrainConfig, real: torch.Tensor,
               fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        loss, stats = self.critic_loss(nets["D"], cfg, real, fake)
        stats["loss_D"] = loss.detach()
        return loss, stats

    def g_loss(self, nets: dict[str, nn.Module], cfg: TrainConfig,
               fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        loss = adversarial_g(cfg, nets["D"](fake))
        return loss, {"loss_G": loss.detach()}

    def d_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        """D's loss on a real batch and fakes made from `inputs` (no G gradients), or on
        `fake` when the loop made them (see `reuses_fakes`)."""
        if fake is None:
            with torch.no_grad():
                fake = nets["G"](inputs["z"])
        return self.d_loss(nets, cfg, batch["real"], fake.detach().float())

    def g_objective(self, nets: dict[str, nn.Module], cfg: TrainConfig, batch: Batch,
                    inputs: Batch, fake: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Stats]:
        """G's loss (`batch` is the last D step's batch; unconditional G does not use it).
        `fake`, when given, is the last D step's fakes with their graph to G kept."""
        return self.g_loss(nets, cfg, nets["G"](inputs["z"]) if fake is None else fake)

    def reuses_fakes(self, cfg: TrainConfig) -> bool:
        """Whether the G step may score the fakes of the D step just before it (one G forward
        per iteration instead of two, as in the PyTorch DCGAN example). Needs one D step per
        G step and a G step whose inputs do not depend on the real batch."""
        return (self.kind == "unconditional" and cfg.reuse_fakes and cfg.n_critic == 1
                and cfg.schedule == "alternate")

    @torch.no_grad()
    def after_d_step(self, nets: dict[str, nn.Module], cfg: TrainConfig) -> None:
        if cfg.clip_value > 0:  # WGAN's Lipschitz constraint by weight clipping
            for p in nets["D"].parameters():
                p.clamp_(-cfg.clip_value, cfg.clip_value)
