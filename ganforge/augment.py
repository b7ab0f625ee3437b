"""Differentiable augmentation of every image D sees (DiffAugment, Zhao et al. 2020), with an
ADA-style adaptive probability (Karras et al. 2020).

Small data sets let D memorise the real images within a few thousand steps: it becomes right
on nearly all of them and G's signal dies. Augmenting real *and* generated images, in the D
and the G step alike, with transforms that gradients pass through, shows D many more distinct
images without teaching G to make augmented ones (G is only ever compared through the same
transforms).

Transforms (images in [-1, 1], [N, C, H, W]; each image draws its own parameters):
  * color:       brightness +U(-0.5, 0.5), saturation x U(0, 2) around the pixel's channel
                 mean, contrast x U(0.5, 1.5) around the image mean; clamped back to [-1, 1];
  * translation: an integer shift of up to 1/8 of the size in x and y, vacated pixels 0;
  * cutout:      a square of half the size, at a random centre, set to 0.

With probability p each transform is applied to an image, independently per image and per
transform (p = 1: DiffAugment; p < 1: ADA's per-transform probability). `auto` adjusts p from
the overfitting signal r_t = E[sign(D(real))] toward a target (ADA: 0.6): raised while D is too
sure of the real images, lowered otherwise. Everything runs batched on the images' device;
p and r_t stay on the device (no host synchronisation), and as buffers they travel in
checkpoints, so a resumed run continues with the same p.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ganforge.errors import GanforgeError

Transform = Callable[[torch.Tensor], torch.Tensor]


def _uniform(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """One value per image, broadcastable over [N, C, H, W]."""
    return torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(lo, hi)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)  # brightness
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * _uniform(x, 0.0, 2.0) + mean_c  # saturation (a no-op on gray images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(x, 0.5, 1.5) + mean  # contrast
    return x.clamp(-1.0, 1.0)


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1), device=x.device)
    # output pixel (i, j) reads input (i - dy, j - dx) from a zero-padded copy
    padded = nn.functional.pad(x, (sx, sx, sy, sy))
    rows = torch.arange(h, device=x.device)[None] + sy - dy  # [N, H]
    cols = torch.arange(w, device=x.device)[None] + sx - dx  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_layout(x))


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n, 1), device=x.device)  # the square's centre, anywhere
    cx = torch.randint(0, w, (n, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None] - (cy - ch // 2)  # [N, H]: row inside if 0..ch-1
    xs = torch.arange(w, device=x.device)[None] - (cx - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


TRANSFORMS: dict[str, Transform] = {"color": color, "translation": translation,
                                    "cutout": cutout}


def parse_policy(policy: str) -> list[str]:
    """`color,translation,cutout` (any subset, any order; empty = off) -> transform names in
    the canonical order. Raises GanforgeError naming an unknown transform."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in TRANSFORMS]
    if unknown:
        raise GanforgeError(f"unknown augmentation {', '.join(map(repr, unknown))} in augment="
                            f"{policy!r}; choose from {', '.join(TRANSFORMS)}")
    return [p for p in TRANSFORMS if p in names]


def parse_p(value: str) -> float | None:
    """`auto` -> None; a number in [0, 1] -> float. Raises GanforgeError otherwise."""
    if value.strip().lower() == "auto":
        return None
    try:
        p = float(value)
    except ValueError:
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise GanforgeError(f"config key 'augment_p' must be `auto` or a number in [0, 1], "
                            f"got {value!r}")
    return p


class Augment(nn.Module):
    """The augmentation pipeline of one run, with its probability p as state.

    `auto` (p_fixed None): p starts at 0; every `interval` D steps, p moves by
    `interval * batch / (kimg * 1000)` toward more augmentation when r_t > target, toward less
    otherwise, so p can cross [0, 1] in `kimg` thousand real images; p is capped at `p_max`.
    """

    def __init__(self, policy: Sequence[str], p: float | None = 1.0, target: float = 0.6,
                 kimg: float = 100.0, interval: int = 4, p_max: float = 1.0):
        super().__init__()
        self.policy = list(policy)
        self.adaptive = p is None
        # whether images are ever left as they are: decided on the host, never by reading p
        self.mixed = p is None or p < 1.0
        self.target, self.kimg, self.interval, self.p_max = target, kimg, interval, p_max
        self.register_buffer("p", torch.tensor(0.0 if p is None else float(p)))
        # running sum of sign(D(real)) and its count since the last adjustment; the last r_t
        self.register_buffer("sign_sum", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("r_t", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.policy:
            out = TRANSFORMS[name](x)
            if self.mixed:
                keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p
                out = torch.where(keep, x, out)
            x = out
        return x

    @torch.no_grad()
    def observe(self, d_acc_real: torch.Tensor) -> None:
        """Account one D step: its share of real images D called real. sign(D(x)) averaged
        over a batch is 2 * accuracy - 1."""
        one = torch.ones((), dtype=torch.float64, device=self.sign_sum.device)
        self.sign_sum.add_(torch.stack([2.0 * d_acc_real.detach().double() - 1.0, one]))

    @torch.no_grad()
    def adjust(self, batch_size: int,
               all_reduce: Callable[[torch.Tensor], Any] | None = None) -> None:
        """Every `interval` D steps (the loop counts them): r_t of the steps observed since the
        last call and, with `auto`, the new p. `all_reduce` sums `sign_sum` across processes
        first, so every process keeps the same p."""
        if all_reduce is not None:
            all_reduce(self.sign_sum)
        r_t = self.sign_sum[0] / self.sign_sum[1].clamp_min(1.0)
        self.r_t.copy_(r_t.float())
        if self.adaptive:
            step = self.interval * batch_size / (self.kimg * 1000.0)
            self.p.add_(torch.sign(r_t - self.target).float() * step).clamp_(0.0, self.p_max)
        self.sign_sum.zero_()


class AugmentedD(nn.Module):
    """D behind the augmentation: `forward(x, *args, **kwargs)` is `D(augment(x), ...)`, so
    every caller of D (the D step, the G step, the gradient penalty) sees augmented images
    while the loss math stays the variant's. Only the first argument (the images) is
    augmented: a conditional D's labels pass through."""

    def __init__(self, D: nn.Module, augment: Augment):
        super().__init__()
        self.D, self.augment = D, augment

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.D(self.augment(x), *args, **kwargs)


# -- does augmentation leak into the generated images? ----------------------------------------

def _gray(images: np.ndarray, tol: float) -> torch.Tensor:
    """[N, H, W] bool: pixels whose every channel is within tol of mid-gray (0 in [-1, 1]: the
    value translation pads with and cutout fills)."""
    # [N, H, W, C] uint8 values as float32: a copy, so a read-only (memory-mapped) array works
    x = torch.from_numpy(np.array(images, dtype=np.float32))
    return ((x - 127.5).abs() <= tol).all(-1)


def artifact_rates(images: np.ndarray, tol: float = 10.0) -> dict[str, float]:
    """Share of images (uint8 [N, H, W, C]) that show a translation border (a whole outermost
    row or column of mid-gray) or a cutout (a mid-gray square a quarter of the size wide).
    Images that are mostly mid-gray (an untrained G's) are flat, not augmented: not counted."""
    g = _gray(images, tol)
    n, h, w = g.shape
    structured = g.flatten(1).float().mean(1) < 0.6  # the artifacts cover at most ~45 %
    border = g[:, 0].all(1) | g[:, -1].all(1) | g[:, :, 0].all(1) | g[:, :, -1].all(1)
    k = max(2, min(h, w) // 4)
    # a k x k window all gray <=> its min over the window is 1
    win = -nn.functional.max_pool2d(-g[:, None].float(), k, stride=1)
    cut = win.flatten(1).max(1).values >= 1.0
    return {"border": float((border & structured).float().mean()),
            "cutout": float((cut & structured).float().mean())}


def leak_check(fake: np.ndarray, real: np.ndarray, margin: float = 0.05) -> dict[str, Any]:
    """Compare the augmentation artifacts of generated and real images (uint8 [N, H, W, C]).
    A transform leaks when generated images show its artifact clearly more often than real
    ones: by `margin` (absolute) and twice as often. Returns the four rates and `leaks`, the
    names of the leaking transforms (empty when none)."""
    rf, rr = artifact_rates(fake), artifact_rates(real)
    leaks = [("translation" if k == "border" else "cutout") for k in rf
             if rf[k] > rr[k] + margin and rf[k] > 2 * rr[k]]
    return {"leak_border_fake": rf["border"], "leak_border_real": rr["border"],
            "leak_cutout_fake": rf["cutout"], "leak_cutout_real": rr["cutout"], "leaks": leaks}
