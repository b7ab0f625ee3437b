"""Small-data networks after FastGAN (Liu et al., ICLR 2021, "Towards Faster and Stabilized
GAN Training for High-fidelity Few-shot Image Synthesis").

G: z -> 4x4 -> upsampling blocks (4x4 stride-2 transposed conv, BatchNorm, GLU) -> 3x3 conv
-> tanh, with skip-layer excitation: a low-resolution feature map, pooled to 4x4, gates the
channels of one 8-16x higher in resolution (a cheap long skip path between resolutions).

D: spectral-normalised stride-2 conv blocks to 8x8 and a 5x5 patch of logits, plus two small
decoders (up blocks as in G) that reconstruct the whole image at low resolution from D's 8x8
features and one quadrant of it from the matching quadrant of D's 16x16 features. Trained on
real images only, they make D keep features that describe the image instead of memorising
the few it sees (the paper's self-supervised D). D returns reconstructions and their
targets; the loss is the variant's.

Channels per resolution follow the paper's table (ngf x {4: 16, 8: 8, 16: 4, 32: 2, 64: 2,
128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}), scaled so the output resolution has `width`.
Native sizes are powers of two from 32 to 1024; other sizes are generated at the next one and
resized (G), or resized up to it (D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ganforge.nets.layers import init_dcgan_weights, maybe_sn, norm2d

PAPER_TABLE = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def native_size(size: int) -> int:
    """The power of two (32..1024) the networks run at for images of `size` pixels."""
    if not 8 <= size <= 1024:
        raise ValueError(f"small-data networks need a size of 8 to 1024 px, got {size}")
    native = 32  # D needs 16x16 and 8x8 features below its input
    while native < size:
        native *= 2
    return native


def channel_table(native: int, width: int, max_width: int = 512) -> dict[int, int]:
    """{resolution: channels} for 4..native: the paper's shape, `width` at `native`."""
    scale = width / PAPER_TABLE[native]
    return {r: max(1, min(max_width, round(m * scale)))
            for r, m in PAPER_TABLE.items() if r <= native}


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """Doubles the resolution: 4x4 stride-2 transposed conv to 2*c_out, BatchNorm, GLU (halves
    to c_out). The paper's x2 nearest upsampling + 3x3 conv is the special case of this conv
    whose four 2x2 sub-pixel kernels are sums of one 3x3 kernel; the transposed conv computes
    the same 2x2 footprint with 4/9 of the multiply-adds: a 1.5x faster G step on a CPU, and
    on the Pokémon sprites in 10 CPU minutes 750 steps to clearer shapes where the paper's
    block reached 500."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, 2 * c_out, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1))


class SkipExcitation(nn.Module):
    """Skip-layer excitation: `low` [N, c_low, h, w] -> per-channel gates in (0, 1) for
    `high` [N, c_high, H, W] (any H, W): pool to 4x4, 4x4 conv, LeakyReLU, 1x1 conv, sigmoid."""

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(c_low, c_high, 4, 1, 0),
                                  nn.LeakyReLU(0.1), nn.Conv2d(c_high, c_high, 1),
                                  nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)  # gate: [N, c_high, 1, 1]


def sle_sources(native: int) -> dict[int, int]:
    """{gated resolution: source resolution}: every map from 32 px up to 512 px is gated by
    one 8x (at 32 px) or 16x lower, as the paper's 64<-4, 128<-8, 256<-16, 512<-32."""
    return {r: max(4, r // 16) for r in PAPER_TABLE if 32 <= r <= min(native, 512)}


class SmallDataGenerator(nn.Module):
    """z [N, z_dim] -> images [N, channels, size, size] in [-1, 1]."""

    def __init__(self, z_dim: int, size: int, channels: int, width: int = 32,
                 max_width: int = 512):
        super().__init__()
        self.size, self.native = size, native_size(size)
        ch = self.widths = channel_table(self.native, width, max_width)
        # z -> 4x4: a linear layer is a ConvTranspose on a 1x1 input
        self.project = nn.Sequential(nn.Linear(z_dim, 2 * ch[4] * 16, bias=False),
                                     nn.Unflatten(1, (2 * ch[4], 4, 4)),
                                     nn.BatchNorm2d(2 * ch[4]), nn.GLU(dim=1))
        self.ups = nn.ModuleDict({str(r): up_block(ch[r // 2], ch[r]) for r in ch if r > 4})
        self.sle_from = sle_sources(self.native)
        self.sle = nn.ModuleDict({str(r): SkipExcitation(ch[s], ch[r])
                                  for r, s in self.sle_from.items()})
        self.to_image = nn.Sequential(nn.Conv2d(ch[self.native], channels, 3, 1, 1), nn.Tanh())
        init_dcgan_weights(self)

    def features(self, z: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every resolution's feature map (after its excitation), {4: [N, c4, 4, 4], ...}."""
        feats = {4: self.project(z)}
        x = feats[4]
        for r, block in self.ups.items():
            x = block(x)
            if r in self.sle:
                x = self.sle[r](feats[self.sle_from[int(r)]], x)
            feats[int(r)] = x
        return feats

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.to_image(self.features(z)[self.native])  # [N, C, native, native]
        if x.shape[-1] != self.size:
            # in float32: CPUs have no bfloat16 kernel for the antialiased resize, so under
            # bf16 autocast (amp=auto) a size off the native ones (28, 48, 96 px) would fail
            x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False).to(x.dtype)
        return x


def down_block(c_in: int, c_out: int, size_out: int, norm: str, spectral: bool) -> nn.Sequential:
    """Halves the resolution: 4x4 stride-2 conv, norm, LeakyReLU 0.2. The paper's two-branch
    block (this plus a 3x3 conv, averaged with a 2x2-pool + 1x1-conv branch) doubles D's
    cost; on the Pokémon sprites at 64 px in 10 CPU minutes it gave FID 210 (1,310 steps)
    where this block gave 196 (1,967 steps)."""
    return nn.Sequential(maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm != "batch"), spectral),
                         norm2d(norm, c_out, size_out), nn.LeakyReLU(0.2))


class Decoder(nn.Module):
    """[N, c_in, 8, 8] features -> [N, channels, out, out] image in [-1, 1], through up
    blocks to ch[16], ch[32], ... channels."""

    def __init__(self, c_in: int, ch: dict[int, int], out: int, channels: int):
        super().__init__()
        blocks: list[nn.Module] = []
        r = 8
        while r < out:
            blocks.append(up_block(c_in, ch[2 * r]))
            c_in, r = ch[2 * r], 2 * r
        self.blocks = nn.Sequential(*blocks, nn.Conv2d(c_in, channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def quadrants(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 4, C, H/2, W/2]: top-left, top-right, bottom-left, bottom-right."""
    n, c, h, w = x.shape
    q = x.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5)
    return q.reshape(n, 4, c, h // 2, w // 2)


def pick(q: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """One quadrant per sample: q [N, 4, C, h, w], which [N] in 0..3 -> [N, C, h, w]."""
    return q[torch.arange(q.shape[0], device=q.device), which]


class SmallDataDiscriminator(nn.Module):
    """Images [N, C, size, size] -> logits [N, 25] (a 5x5 patch map per image).

    `D(x, recon=True)` also returns `[(reconstruction, target), ...]`: the whole image at
    `recon_size` from the 8x8 features, and one quadrant per image (random, or `quadrant` [N]
    in 0..3: top-left, top-right, bottom-left, bottom-right) from the same quadrant of the
    16x16 features. Targets are computed from the `x` given (2x2-block averages), so a wrapper
    that augments x before D gets reconstructions of the augmented images.

    The first block, which reads the image, has no `norm` (as in DCGAN's and the paper's D)
    unless `input_norm`: D sees real and fake images in separate batches, and BatchNorm right
    after the first (linear) conv takes out each batch's own mean and scale, so D barely told
    a batch of images from the same batch at a third of the contrast, shifted grey (a fresh D's
    logits moved by 0.14 of their spread, 0.70 without that norm: tests/test_smalldata.py). G
    then drifts to washed-out grey images, as the Pokémon runs did while ADA kept p near 0.
    """

    def __init__(self, size: int, channels: int, width: int = 32, max_width: int = 512,
                 norm: str = "batch", spectral: bool = True, input_norm: bool = False):
        super().__init__()
        self.size, self.native = size, native_size(size)
        ch = self.widths = channel_table(self.native, width, max_width)
        self.recon_size = min(self.native // 2, 128)
        # no full-resolution stem (the paper has a stride-1 conv at 256 px and above): on a
        # CPU at 64 px it costs as much as the rest of D; the first block reads the image
        self.downs = nn.ModuleDict({
            str(r): down_block(channels if 2 * r == self.native else ch[2 * r], ch[r], r,
                               norm if input_norm or 2 * r != self.native else "none", spectral)
            for r in sorted(ch, reverse=True) if 8 <= r < self.native})
        self.head = nn.Sequential(maybe_sn(nn.Conv2d(ch[8], ch[8], 1), spectral),
                                  norm2d(norm, ch[8], 8), nn.LeakyReLU(0.2),
                                  maybe_sn(nn.Conv2d(ch[8], 1, 4, 1, 0), spectral))
        # the decoders run at half D's widths, as in the paper: they only have to read the
        # features back, not be good image models
        half = {r: max(1, c // 2) for r, c in ch.items()}
        self.decode_whole = Decoder(ch[8], half, self.recon_size, channels)
        self.decode_part = Decoder(ch[16], half, self.recon_size, channels)
        init_dcgan_weights(self)
        if spectral:
            refresh_spectral_norms(self)

    def forward(self, x: torch.Tensor, recon: bool = False, quadrant: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        if x.shape[-1] != self.native:
            x = F.interpolate(x, size=(self.native, self.native), mode="bilinear",
                              align_corners=False)
        h, feats = x, {}
        for r, block in self.downs.items():
            h = feats[int(r)] = block(h)
        logits = self.head(h).flatten(1)  # [N, 25]
        if not recon:
            return logits
        if quadrant is None:
            quadrant = torch.randint(0, 4, (x.shape[0],), device=x.device)
        whole = self.decode_whole(feats[8])  # [N, C, recon_size, recon_size]
        part = self.decode_part(pick(quadrants(feats[16]), quadrant))
        target_whole = shrink(x, self.recon_size)
        target_part = shrink(pick(quadrants(x), quadrant), self.recon_size)
        return logits, [(whole, target_whole), (part, target_part)]


@torch.no_grad()
def refresh_spectral_norms(module: nn.Module, iterations: int = 15) -> None:
    """Re-estimate every spectral norm after the weights were re-initialised: torch estimates
    it when the norm is attached, and a stale estimate makes the first steps (and an eval-mode
    D) scale by a wrong sigma. Each read of a weight in training mode is one power iteration."""
    was_training = module.training
    module.train()
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            for _ in range(iterations):
                m.weight  # noqa: B018 (the read runs the power iteration)
    module.train(was_training)


def shrink(x: torch.Tensor, size: int) -> torch.Tensor:
    """Block-average a [N, C, S, S] batch down to size x size (S a multiple of size)."""
    return F.adaptive_avg_pool2d(x, size) if x.shape[-1] != size else x
