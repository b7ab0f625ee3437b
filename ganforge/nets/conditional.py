"""Class- and text-conditional networks.

G(z, c): the condition's embedding h (a learned vector per class, or a learned projection of
a frozen caption embedding) is joined to z and, with `cond_norm`, also sets the scale and shift
of every BatchNorm (conditional BatchNorm, as in SNGAN-projection and BigGAN). Joined to z
alone, h dominates the first layer and G learns to ignore z at short budgets: every image
of a class looks the same (docs/BENCHMARKS.md, "Within-class diversity of cgan").

D(x, c): a projection discriminator (Miyato & Koyama 2018):
D(x, c) = ψ(φ(x)) + <embed(c), Σ_hw φ(x)>.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.nets.dcgan import DCGANDiscriminator, DCGANGenerator, plan_generator
from ganforge.nets.layers import init_dcgan_weights, maybe_sn


def center_text(e: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Caption embeddings [N, dim] minus the mean of the training captions, renormalised:
    sentence embeddings share a large common direction (captions of different classes have
    cosine ~0.35), which centring removes, so the classes differ more."""
    return F.normalize(e.float() - center, dim=1)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; a per-sample scale and shift computed from h."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        for lin in (self.gain, self.bias):  # starts as plain BatchNorm (scale 1, shift 0)
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.ones_(self.gain.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(h)[:, :, None, None] + self.bias(h)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """G(z [N, z_dim], c) -> images [N, C, H, W]. c: class indices [N] (int64), or for a
    text-conditioned G (`text_dim` > 0) also caption embeddings [N, text_dim] (float); a
    class index then stands for its captions' mean embedding (the `class_text` buffer), and
    `captions` holds the embedded training captions (what it was trained on)."""

    def __init__(self, z_dim: int, n_classes: int, embed_dim: int, size: int, channels: int,
                 width: int = 64, max_width: int = 512, text_dim: int = 0,
                 cond_norm: bool = True):
        super().__init__()
        self.n_classes, self.text_dim, self.cond_norm, self.size = (n_classes, text_dim,
                                                                    cond_norm, size)
        if text_dim:
            self.register_buffer("class_text", torch.zeros(n_classes, text_dim))
            self.register_buffer("text_center", torch.zeros(text_dim))
            # placeholders until the captions are set (set_captions) or loaded
            self.captions = CaptionTable(torch.zeros(n_classes, text_dim),
                                         torch.arange(n_classes), n_classes)
            self.embed: nn.Module = nn.Linear(text_dim, embed_dim, bias=False)
        else:
            self.embed = nn.Embedding(n_classes, embed_dim)
        nn.init.normal_(self.embed.weight, 0.0, 1.0)  # on the scale of z (captions: unit norm)
        if not cond_norm:
            self.net = DCGANGenerator(z_dim + embed_dim, size, channels, width, max_width)
            return
        base, ups = plan_generator(size)
        widths = [min(width * 2 ** (ups - 1 - i), max_width) for i in range(ups)]
        self.base, self.width0 = base, widths[0]
        self.project = nn.Linear(z_dim + embed_dim, widths[0] * base * base, bias=False)
        self.convs = nn.ModuleList(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False)
                                   for w_in, w_out in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1)
        init_dcgan_weights(self)
        nn.init.normal_(self.embed.weight, 0.0, 1.0)
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(w, embed_dim) for w in widths)

    def set_captions(self, emb: torch.Tensor, phrase_class: torch.Tensor) -> None:
        """The embedded training captions [P, text_dim] and their classes [P]."""
        self.captions = CaptionTable(emb, phrase_class, self.n_classes)
        mean = torch.zeros(self.n_classes, self.text_dim).index_add_(0, phrase_class, emb)
        self.class_text.copy_(F.normalize(mean, dim=1))
        self.text_center.copy_(emb.mean(0))

    def snap(self, e: torch.Tensor, temperature: float) -> torch.Tensor:
        """Express caption embeddings [N, text_dim] as a softmax(cos / temperature)-weighted
        mix of the training captions: a phrasing G never saw lands where it was trained."""
        emb = self.captions.emb
        w = torch.softmax(F.normalize(e.float(), dim=1) @ emb.T / temperature, dim=1)
        return F.normalize(w @ emb, dim=1)

    def condition(self, c: torch.Tensor) -> torch.Tensor:
        """The condition's embedding h [N, embed_dim]."""
        if not self.text_dim:
            return self.embed(c)
        if not c.is_floating_point():
            c = self.class_text[c]
        return self.embed(center_text(c, self.text_center))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.condition(c)
        if not self.cond_norm:
            return self.net(torch.cat([z, h], dim=1))
        x = self.project(torch.cat([z, h], dim=1))
        x = F.relu(self.norms[0](x.view(-1, self.width0, self.base, self.base), h))
        for conv, norm in zip(self.convs, self.norms[1:], strict=True):
            x = F.relu(norm(conv(x), h))
        x = torch.tanh(self.out(x))  # [N, C, base*2^ups, base*2^ups]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False)
        return x


class ProjectionDiscriminator(nn.Module):
    """D(x, c) -> [N]: the DCGAN discriminator's logit plus the inner product of the
    condition's embedding with the spatially summed last features. c: class indices [N], or
    caption embeddings [N, text_dim] when `text_dim` > 0. `convs`: the DCGAN discriminator's
    extra 3x3 convolutions per resolution (`d_convs`)."""

    def __init__(self, n_classes: int, size: int, channels: int, width: int = 64,
                 max_width: int = 512, norm: str = "batch", text_dim: int = 0, convs: int = 0):
        super().__init__()
        self.base = DCGANDiscriminator(size, channels, width, max_width, norm, convs)
        feat = self.base.head.in_features if not hasattr(self.base.head, "parametrizations") \
            else self.base.head.parametrizations.weight.original.shape[1]
        n_feat = self._feature_channels(feat)
        self.text_dim = text_dim
        if text_dim:
            self.register_buffer("text_center", torch.zeros(text_dim))
        layer = nn.Linear(text_dim, n_feat, bias=False) if text_dim else \
            nn.Embedding(n_classes, n_feat)
        self.embed = maybe_sn(layer, norm == "spectral")
        emb = self.embed.parametrizations.weight.original if hasattr(
            self.embed, "parametrizations") else self.embed.weight
        nn.init.normal_(emb, 0.0, 0.02)

    def _feature_channels(self, flat: int) -> int:
        convs = [m for m in self.base.features.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels if convs else flat

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f = self.base.features(x)  # [N, F, s, s]
        out = self.base.head(f.flatten(1)).squeeze(1)  # [N]
        if self.text_dim:
            c = center_text(c, self.text_center)
        return out + (self.embed(c) * f.sum(dim=(2, 3))).sum(1)


class CaptionTable(nn.Module):
    """The embedded training captions of a text-conditioned cgan, grouped by class (saved
    with the run, never optimised): `pick(y, u)` is, per sample, the phrase of class y[i]
    chosen by u[i] in [0, 1)."""

    def __init__(self, emb: torch.Tensor, phrase_class: torch.Tensor, n_classes: int):
        super().__init__()
        count = torch.bincount(phrase_class, minlength=n_classes)
        order = torch.argsort(phrase_class, stable=True)
        self.register_buffer("emb", emb[order].float().contiguous())  # [P, dim]
        self.register_buffer("count", count)  # [K]
        self.register_buffer("start", torch.cumsum(count, 0) - count)  # [K]

    def pick(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n = self.count[y]
        return self.emb[self.start[y] + torch.minimum((u * n).long(), n - 1)]  # [N, dim]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        for name in ("emb", "count", "start"):  # the captions' number comes from the file
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name],
                                                     device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CycledClasses(nn.Module):
    """An unconditional view of a conditional G for metrics: G(z) with the labels
    0, 1, ..., n-1, 0, 1, ... along the batch, so every class is scored equally often."""

    def __init__(self, G: nn.Module, n_classes: int):
        super().__init__()
        self.G, self.n_classes = G, n_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = torch.arange(z.shape[0], device=z.device) % self.n_classes
        return self.G(z, c)
