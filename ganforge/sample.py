"""Using a trained generator: rebuild it from a checkpoint alone, sample, grids, interpolation.

Truncation here is the "psi" form: z <- psi * z with psi in (0, 1]. psi = 1 is the training
distribution; smaller psi trades diversity for typicality, and psi near 0 shows the region
around the origin of the latent space, which a generator may not have covered.
"""

from __future__ import annotations

import io as _io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ganforge import checkpoint, io
from ganforge.config import TrainConfig, config_from_dict
from ganforge.errors import GanforgeError
from ganforge.variants import get_variant

MAX_SAMPLES = 100_000


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a checkpoint: G (the EMA weights when the run kept them).
    `kind`: unconditional, conditional (then `classes` names its labels) or translation."""

    G: nn.Module
    config: TrainConfig
    size: int
    channels: int
    step: int
    path: Path
    ema: bool
    device: torch.device
    kind: str = "unconditional"
    classes: list[str] = field(default_factory=list)

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def text_dim(self) -> int:
        """The caption embedding size of a text-conditioned model (0 for the rest)."""
        return int(getattr(self.G, "text_dim", 0))

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(getattr(get_variant(self.config.variant), "directions", ()))

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """n latent vectors from a seed (the same on every machine): [n, z_dim]."""
        if self.kind == "translation":
            raise GanforgeError(f"{self.path} is an image-to-image model "
                                f"({self.config.variant}): it has no latents; use "
                                "`ganforge translate`")
        g = torch.Generator().manual_seed(seed)
        return get_variant(self.config.variant).sample_z(n, self.config, generator=g)

    def class_index(self, name_or_index: str | int) -> int:
        """A class given by index or by name (case-insensitive) -> its index."""
        if self.kind != "conditional":
            raise GanforgeError(f"{self.path} is not a class-conditional model; it has no "
                                "classes")
        text = str(name_or_index).strip()
        if text.isdigit() and int(text) < len(self.classes):
            return int(text)
        lower = [c.lower() for c in self.classes]
        if text.lower() in lower:
            return lower.index(text.lower())
        listed = ", ".join(f"{i}={c}" for i, c in enumerate(self.classes))
        raise GanforgeError(f"unknown class {text!r}; this model's classes are {listed}")

    def prompt_embedding(self, prompt: str, temperature: float | None = None) -> torch.Tensor:
        """A text-conditioned model's condition for a prompt [1, text_dim]: its embedding by
        the model's sentence-embedding model (ganforge[text]), expressed as a mix of the
        training captions' embeddings (`temperature`, default text.PROMPT_TEMPERATURE; 0 = the
        prompt's own embedding)."""
        from ganforge import text

        prompt = text.check_prompt(prompt)
        if not self.text_dim:
            how = ("it is conditioned on class labels; use --class" if self.kind == "conditional"
                   else f"it is not a conditional model ({self.config.variant})")
            raise GanforgeError(f"{self.path} takes no text prompt: {how}. A prompt needs a "
                                "cgan trained with `--set condition=text`")
        e = text.embed([prompt], self.config.text_model)
        temperature = text.PROMPT_TEMPERATURE if temperature is None else temperature
        return self.G.snap(e.to(self.device), temperature).cpu() if temperature > 0 else e

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, truncation: float = 1.0, batch_size: int = 256,
                 c: torch.Tensor | None = None) -> np.ndarray:
        """Latents [N, z_dim] (and for a conditional model class indices [N], default
        0, 1, 2, ... cycling, or for a text-conditioned one also caption embeddings
        [N, text_dim]) -> uint8 images [N, H, W, C]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise GanforgeError(f"expected latents of shape [N, {self.z_dim}], "
                                f"got {list(z.shape)}")
        check_truncation(truncation)
        if c is not None and self.kind != "conditional":
            raise GanforgeError(f"{self.config.variant} is not a class-conditional model; "
                                "it takes no class")
        if self.kind == "conditional":
            if c is None:
                c = torch.arange(z.shape[0]) % len(self.classes)
            c = torch.as_tensor(c)
            if c.is_floating_point():
                if not self.text_dim:
                    raise GanforgeError("this model is conditioned on class indices, not on "
                                        "caption embeddings")
                if c.shape != (z.shape[0], self.text_dim) or not torch.isfinite(c).all():
                    raise GanforgeError(f"expected {z.shape[0]} finite caption embeddings "
                                        f"[{z.shape[0]}, {self.text_dim}]")
            else:
                c = c.to(torch.long).reshape(-1)
                if c.shape[0] != z.shape[0] or c.min() < 0 or c.max() >= len(self.classes):
                    raise GanforgeError(f"expected {z.shape[0]} class indices in 0.."
                                        f"{len(self.classes) - 1}")
        out = []
        for i in range(0, z.shape[0], batch_size):
            zi = z[i:i + batch_size].to(self.device, torch.float32) * truncation
            x = self.G(zi) if c is None else self.G(zi, c[i:i + batch_size].to(self.device))
            out.append(to_uint8(x))
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size,
                                                         self.channels), np.uint8)

    @torch.inference_mode()
    def translate(self, images: np.ndarray, direction: str = "a2b",
                  batch_size: int = 64) -> np.ndarray:
        """uint8 images [N, H, W, C] at the model's size -> their translations, same shape."""
        if self.kind != "translation":
            raise GanforgeError(f"{self.path} is not an image-to-image model "
                                f"({self.config.variant}); nothing to translate with")
        if direction not in self.directions:
            raise GanforgeError(f"direction {direction!r} is not available for "
                                f"{self.config.variant}; use {' or '.join(self.directions)}")
        want = (self.size, self.size, self.channels)
        if images.ndim != 4 or images.shape[1:] != want:
            raise GanforgeError(f"expected images of shape [N, {', '.join(map(str, want))}], "
                                f"got {list(images.shape)}")
        variant = get_variant(self.config.variant)
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[i:i + batch_size], dtype=np.uint8))
            x = x.permute(0, 3, 1, 2).to(self.device, torch.float32) / 127.5 - 1.0
            out.append(to_uint8(variant.translate(self.G, x, direction)))
        return np.concatenate(out) if out else images[:0].copy()


def check_truncation(truncation: float) -> None:
    if not (isinstance(truncation, (int, float)) and math.isfinite(truncation)
            and 0 < truncation <= 1):
        raise GanforgeError(f"truncation must be in (0, 1], got {truncation}")


def load_generator(path: str | Path, device: str = "cpu", prefer: str = "best",
                   use_ema: bool = True) -> LoadedGenerator:
    """Rebuild the generator from a checkpoint file or run directory, with nothing else."""
    ckpt = checkpoint.load_checkpoint(checkpoint.resolve(path, prefer))
    try:
        cfg = config_from_dict(ckpt.config)
    except GanforgeError as e:
        raise GanforgeError(f"{ckpt.path}: its config is invalid ({e})") from None
    state = ckpt.meta["state"]
    size, channels = int(state["size"]), int(state["channels"])
    variant = get_variant(cfg.variant)
    classes = [str(c) for c in state.get("classes") or []]
    if variant.kind == "conditional" and not classes:
        raise GanforgeError(f"{ckpt.path}: a conditional model without class names")
    G = variant.build(cfg, size, channels, n_classes=len(classes))["G"]
    ema = use_ema and any(k.startswith("G_ema.") for k in ckpt.tensors)
    ckpt.load_module(G, "G_ema" if ema else "G")
    dev = torch.device(device)
    G.to(dev).eval().requires_grad_(False)
    return LoadedGenerator(G=G, config=cfg, size=size, channels=channels, step=ckpt.step,
                           path=ckpt.path, ema=ema, device=dev, kind=variant.kind,
                           classes=classes)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1], [N, C, H, W] -> uint8 [N, H, W, C] (x * 127.5 + 127.5)."""
    x = (x.detach().float() * 127.5 + 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 image [rows*(H+pad)+pad, ..., C] on a gray background."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 128, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + col * (w + pad): pad + col * (w + pad) + w] = im
    return grid


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image))


def png_bytes(image: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> None:
    io.write_bytes(path, png_bytes(image))


def save_grid(path: str | Path, images: np.ndarray, nrow: int | None = None,
              upscale: int = 0) -> None:
    grid = make_grid(images, nrow)
    if upscale > 1:
        grid = np.repeat(np.repeat(grid, upscale, 0), upscale, 1)
    save_png(path, grid)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a, b [D] at fractions t [T] -> [T, D]."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


def interpolation_frames(gen: LoadedGenerator, seed_a: int, seed_b: int, frames: int = 16,
                         truncation: float = 1.0, spherical: bool = True) -> np.ndarray:
    """uint8 [frames, H, W, C]: a walk from the latent of seed_a to that of seed_b."""
    if not 2 <= frames <= 1000:
        raise GanforgeError(f"frames must be between 2 and 1000, got {frames}")
    a, b = gen.latents(1, seed_a)[0], gen.latents(1, seed_b)[0]
    t = torch.linspace(0, 1, frames)
    z = slerp(a, b, t) if spherical else torch.lerp(a, b, t[:, None])
    return gen.generate(z, truncation)


def gif_bytes(frames: np.ndarray, duration_ms: int = 80, upscale: int = 1,
              bounce: bool = True) -> bytes:
    seq = list(frames) + (list(frames[-2:0:-1]) if bounce else [])
    if upscale > 1:
        seq = [np.repeat(np.repeat(f, upscale, 0), upscale, 1) for f in seq]
    pil = [to_pil(f) for f in seq]
    buf = _io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms,
                loop=0)
    return buf.getvalue()


def write_samples(gen: LoadedGenerator, n: int, out_dir: str | Path | None, seed: int = 0,
                  truncation: float = 1.0, grid: str | Path | None = None,
                  class_: str | int | None = None, prompt: str | None = None) -> np.ndarray:
    """`ganforge sample`: n images as PNG files (sample-00000.png ...) and/or one grid.

    A conditional model draws every image from class `class_` (a name or index) when given,
    a text-conditioned one from `prompt` (any phrase) when given; otherwise one row per
    class, n // classes images each (at least one), column j using the same latent in every
    row."""
    if not 1 <= n <= MAX_SAMPLES:
        raise GanforgeError(f"--n must be between 1 and {MAX_SAMPLES}, got {n}")
    if prompt is not None and class_ is not None:
        raise GanforgeError("give --class or --prompt, not both")
    nrow = None
    if prompt is not None:
        e = gen.prompt_embedding(prompt)  # [1, text_dim]
        images = gen.generate(gen.latents(n, seed), truncation, c=e.expand(n, -1))
    elif gen.kind == "conditional" and class_ is None:
        k = len(gen.classes)
        nrow = max(1, n // k)
        z = gen.latents(nrow, seed).repeat(k, 1)
        images = gen.generate(z, truncation, c=torch.arange(k).repeat_interleave(nrow))
    elif gen.kind == "conditional":
        c = torch.full((n,), gen.class_index(class_), dtype=torch.long)
        images = gen.generate(gen.latents(n, seed), truncation, c=c)
    else:
        if class_ is not None:
            gen.class_index(class_)  # the error: not a conditional model
        images = gen.generate(gen.latents(n, seed), truncation)
    if out_dir is not None:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GanforgeError(f"cannot write samples to {out}: {e.strerror}") from None
        for i, im in enumerate(images):
            save_png(out / f"sample-{i:05d}.png", im)
    if grid is not None:
        save_grid(grid, images, nrow)
    return images
