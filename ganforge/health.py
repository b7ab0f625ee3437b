"""Training health monitor: notices a run going wrong and says what happened.

Checks, cheap enough for every step (flags are accumulated on the device and read once per
log interval, so there is no extra host sync):
  * non-finite losses or gradient norms (NaN / Inf);
  * an exploding critic: |mean D output| or the D gradient norm above `explode_threshold`;
  * a discriminator right on ~100 % of real and fake images for `stuck_steps` generator steps
    in a row (G no longer gets a useful signal);
  * mode collapse, at every sample interval: the mean pairwise distance between generated
    images of a fixed latent batch falls below `collapse_ratio` times that of real images,
    and to less than a third of the highest diversity this run's generator has shown.

The training loop acts on a problem as configured: roll back to the last good checkpoint with a
lower learning rate (default), or stop with a message saying what happened and what to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganforge.config import TrainConfig

ADVICE = {
    "non-finite": "lower lr_d / lr_g, use amp=off, or a loss with a bounded gradient (hinge)",
    "exploding critic": "add a gradient penalty (wgan-gp) or spectral norm (sngan), or lower lr_d",
    "discriminator wins": "lower lr_d, add dropout / label smoothing (real_label=0.9), or on a "
                          "small data set augment=color,translation,cutout with augment_p=auto",
    "mode collapse": "lower lr_g, use wgan-gp or sngan, enlarge the batch, or add EMA",
}


@dataclass
class Problem:
    kind: str
    step: int
    detail: str

    def message(self) -> str:
        return f"{self.kind} at step {self.step}: {self.detail}; try: {ADVICE[self.kind]}"


def diversity(images: torch.Tensor, size: int = 16) -> float:
    """Mean pairwise L2 distance of images [N, C, H, W] in [-1, 1], pooled to size x size
    (a cheap, scale-free proxy of sample diversity)."""
    x = images.detach().float()
    if x.shape[-1] > size:
        x = F.adaptive_avg_pool2d(x, size)
    x = x.flatten(1)
    n = x.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(x, x)
    return float(d.sum() / (n * (n - 1)))


class HealthMonitor:
    def __init__(self, cfg: TrainConfig, real_diversity: float):
        self.cfg = cfg
        self.real_diversity = real_diversity
        self.stuck_since: int | None = None
        self.peak_diversity = 0.0

    def state(self) -> dict[str, float | int | None]:
        """What the detectors remember, saved in checkpoints so a resumed run is the same run."""
        return {"peak_diversity": self.peak_diversity, "stuck_since": self.stuck_since}

    def load_state(self, state: dict[str, float | int | None]) -> None:
        self.peak_diversity = float(state.get("peak_diversity") or 0.0)
        stuck = state.get("stuck_since")
        self.stuck_since = None if stuck is None else int(stuck)

    def step_flags(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """An on-device count of bad values in one step's statistics (no host sync)."""
        bad = torch.zeros((), device=next(iter(stats.values())).device)
        for v in stats.values():
            bad = bad + (~torch.isfinite(v)).sum()
        return bad

    def check_interval(self, step: int, rec: dict[str, float], nonfinite: float) -> Problem | None:
        """Look at one log interval's averages (and the count of non-finite values in it)."""
        cfg = self.cfg
        bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
        if nonfinite or bad:
            what = ", ".join(bad) or "a loss or gradient"
            return Problem("non-finite", step, f"{what} became NaN/Inf")
        # amp=fp16: a step the loss scaler skips (an overflow) is normal and halves the scale
        # (the first few steps of a run usually do); every step of an interval skipped with the
        # scale already below 1 means non-finite gradients at any scale
        for key in ("amp_skips_D", "amp_skips_G"):
            if rec.get(key, 0.0) >= 1.0 and rec.get("amp_scale", 1.0) < 1.0:
                return Problem("non-finite", step, f"every fp16 step of the last {cfg.log_every} "
                               f"overflowed ({key} = 1) with the loss scale down to "
                               f"{rec['amp_scale']:.3g}")
        for key in ("d_real", "d_fake", "grad_norm_D"):
            if abs(rec.get(key, 0.0)) > cfg.explode_threshold:
                return Problem("exploding critic", step,
                               f"{key} = {rec[key]:.3g} exceeds {cfg.explode_threshold:g}")
        if rec.get("d_acc_real", 0) > 0.99 and rec.get("d_acc_fake", 0) > 0.99:
            if self.stuck_since is None:
                self.stuck_since = step - cfg.log_every
            if step - self.stuck_since >= cfg.stuck_steps:
                return Problem("discriminator wins", step,
                               f"D has been right on >99% of real and fake images for "
                               f"{step - self.stuck_since} steps")
        else:
            self.stuck_since = None
        return None

    def check_samples(self, step: int, fake: torch.Tensor) -> Problem | None:
        """Mode collapse: generated diversity far below the real images' diversity."""
        div = diversity(fake)
        self.peak_diversity = max(self.peak_diversity, div)
        # An untrained generator is not diverse either: collapse is diversity *falling* - far
        # below the real images' and far below what this generator already reached.
        floor = self.cfg.collapse_ratio * self.real_diversity
        if div < floor and self.peak_diversity > 3 * div and self.peak_diversity > floor:
            return Problem("mode collapse", step,
                           f"sample diversity fell to {div:.3f} (it was {self.peak_diversity:.3f};"
                           f" real images: {self.real_diversity:.3f})")
        return None
