"""The recipe `ganforge train` uses when the user names no variant and no preset: chosen from
the data (number of images, size, channels) and the device, printed in one line at the start
and recorded in config.json (`recipe`).

Each recipe is the best configuration measured for its kind of data (bench/bench_quality.py
for Fashion-MNIST-like sets, bench/bench_smalldata.py for small colour sets; the figures are in
docs/BENCHMARKS.md). A user's own `--set`, `--config` and flags still win over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganforge.config import PRESETS

# A data set this large no longer lets D memorise it within a typical run: augmentation costs
# more than it gives (Karras et al. 2020 find it neutral to harmful at ~100k+ images; on
# Fashion-MNIST's 60k it measured worse here).
LARGE = 20_000

# The length of a run when neither --steps nor --minutes is given, in generator steps.
DEFAULT_STEPS = 20_000


def measured_latent(size: int, channels: int) -> bool:
    """Whether images are like those the `fast` preset's small latent was measured on (28 px
    gray, Fashion-MNIST): gray and 32 px or less."""
    return channels == 1 and size <= 32


@dataclass(frozen=True)
class Recipe:
    name: str
    why: str
    overrides: dict[str, Any]

    def line(self) -> str:
        """The one line printed at the start of training."""
        return f"recipe: {self.name} ({self.why})"


def choose(n_images: int, size: int, channels: int, device: str, world: int = 1) -> Recipe:
    """The recipe for `n_images` images of `size` px with `channels` channels on `device`
    (`cpu` or `cuda...`), trained by `world` processes (torchrun)."""
    gpu = device.startswith("cuda")
    what = f"{n_images:,} {'gray' if channels == 1 else 'colour'} images of {size} px"
    if n_images >= LARGE:
        preset = "gpu" if gpu else "fast"
        overrides = {**{k: v for k, v in PRESETS[preset].items()
                        if k not in ("log_every", "sample_every")}, "steps": DEFAULT_STEPS}
        if not gpu:
            # the preset made 8-18 steps/s on the 2-core CPUs measured (5,000-10,500 steps in
            # 10 minutes): a quick FID every 1,000 steps (15 s for 250 images) would take
            # 11-21 % of the clock, every 5,000 steps 2-5 %
            overrides.update(eval_every=5000, sample_every=1000)
        modulated = " and a self-modulated G" if overrides.get("g_selfmod") else ""
        latent = ""
        if "z_dim" in overrides and not measured_latent(size, channels):
            # the preset's small latent was measured on 28 px gray images only (rounds 10-11 in
            # docs/BENCHMARKS.md); richer images keep DCGAN's 100, the paper's for 64 px colour
            overrides["z_dim"] = 100
            latent = "; DCGAN's 100-dim latent, the preset's 16 being measured at 28 px gray only"
        return Recipe(preset, f"{what}: enough that D cannot memorise them; the `{preset}` "
                      f"preset, DCGAN with EMA{modulated}, tuned for FID per minute{latent}",
                      overrides)
    # Measured on the Pokémon sprites (64 px, 10 CPU minutes, bench/bench_smalldata.py):
    # the variant's defaults (batch 64, lr 2e-4, float32) took 190 steps in 10 minutes; batch 16
    # with lr 1e-3 and bf16 trained ten times as many and scored best. On a GPU the run is long
    # enough for the paper's learning rate, which is the stable choice at 128-256 px.
    lr = 2e-4 if gpu else 1e-3
    # batch_size is global: 16 images per process (on 8 GPUs a global 16 would leave D's
    # BatchNorm 2 images to normalise over)
    batch = 16 * world
    overrides = dict(variant="small-data", augment="color,translation,cutout", augment_p="auto",
                     ema=0.999, batch_size=batch, lr_g=lr, lr_d=lr, amp="auto",
                     steps=DEFAULT_STEPS)
    if not gpu:
        # Same sprites, 10 minutes, two runs side by side, one thread each (fid1k): G width 8
        # (D 32) 105.8 at 4,046 steps; 16 119.5 at 3,879; 32 150.1 at 2,620 (its quick FID
        # stopped falling after 2,000 steps); 4 stayed behind 8 at every step (quick FID 156.8
        # vs 136.4 at the end); D 64 under G 8 made 2,234 steps; D 16 under G 16 scored 129.2.
        overrides["g_width"] = 8
    width = f", G width {overrides['g_width']}" if "g_width" in overrides else ""
    return Recipe("small-data", f"{what}: few enough that D would memorise them; the "
                  "FastGAN-style small-data GAN with differentiable augmentation "
                  f"(color,translation,cutout; adaptive probability), EMA, batch {batch}, "
                  f"lr {lr:g}{width}", overrides)
