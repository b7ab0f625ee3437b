"""Adversarial losses as pure tensor functions. `real`/`fake` are the discriminator's outputs
(one logit or critic score per image, shape [N]) unless the name says images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F


def bce_d(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Discriminator BCE-with-logits; real_label < 1 is one-sided label smoothing."""
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def bce_g(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Critic loss: mean D(fake) - mean D(real)."""
    return fake.mean() - real.mean()


def wasserstein_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN (Mao et al. 2017), as CycleGAN uses it: E(D(x)−1)² + E D(G(z))²
    (summed like `bce_d`; the translation variants halve D's objective as the papers do)."""
    return (real - 1.0).pow(2).mean() + fake.pow(2).mean()


def lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return (fake - 1.0).pow(2).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two image batches (pix2pix's L1, CycleGAN's cycle loss)."""
    return (a - b).abs().mean()


D_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce": bce_d, "wasserstein": wasserstein_d, "hinge": hinge_d, "lsgan": lsgan_d}
G_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bce": bce_g, "wasserstein": wasserstein_g, "hinge": hinge_g, "lsgan": lsgan_g}


# The loss scale of fp16 training (a device tensor), set by the training loop around the loss
# math (Trainer.autocast); None without loss scaling.
_loss_scale: ContextVar[torch.Tensor | None] = ContextVar("loss_scale", default=None)


@contextmanager
def loss_scale(scale: torch.Tensor | None) -> Iterator[None]:
    """Inside: input-gradient penalties take their inner gradient of the loss scaled by
    `scale` and divide it out again, as GradScaler does for the outer backward, so fp16
    activation gradients in the penalty's backward do not underflow to zero."""
    token = _loss_scale.set(scale)
    try:
        yield
    finally:
        _loss_scale.reset(token)


def _input_grad(D: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """∇ₓ Σ D(x), kept in the graph (create_graph), under the current loss scale."""
    scale = _loss_scale.get()
    out = D(x).float()
    if scale is None:
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return grad
    # scale / N per output, as the (mean) losses GradScaler scales give: a whole scale per
    # output (a sum) would overflow float16 at GradScaler's starting scale 2^16
    n = out.shape[0]
    (grad,) = torch.autograd.grad(out.mean() * scale, x, create_graph=True)
    return grad.float() * (n / scale)


def gradient_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty mean((||∇D(x̂)||₂ − 1)²) with x̂ = ε·real + (1−ε)·fake.

    ε ~ U[0, 1] per sample (not normal), and the gradient norm is taken per sample over all
    of C, H, W (not over the channel dimension only) - the two mistakes widely copied code makes.
    """
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    grad = _input_grad(D, x_hat)
    norm = grad.flatten(1).norm(2, dim=1)  # [N]: one norm per sample over C*H*W
    return ((norm - 1.0) ** 2).mean()


def r1_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """R1: mean ||∇D(real)||² (Mescheder et al. 2018); multiply by gamma/2 at the call site.
    A critic with several outputs per image (a patch map) is taken by their mean per image,
    as its loss takes them, so that gamma means what it means for a one-logit D."""
    x = real.detach().requires_grad_(True)
    grad = _input_grad(lambda t: D(t).reshape(t.shape[0], -1).mean(1), x)
    return grad.flatten(1).pow(2).sum(1).mean()
