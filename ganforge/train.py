"""The training loop: one linear loop, generic over variants.

The loop owns optimisers, backward/step, freezing the idle network, the D/G schedule, AMP,
EMA, logging, sample grids and checkpoints; the variant owns its networks and loss math.

A run directory holds:
    config.json                   the effective config
    metrics.jsonl                 one JSON line per log interval (and per evaluation)
    samples/step-XXXXXX.png       the fixed-latent grid after every sample interval
    plots/*.png                   losses, D accuracy / fooling rate, gradient norms, FID
    checkpoints/latest.safetensors (and best.safetensors when evaluation is on)
"""

from __future__ import annotations

import copy
import fcntl
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ganforge import checkpoint, data, io, plots
from ganforge.config import TrainConfig, config_from_dict
from ganforge.errors import GanforgeError
from ganforge.sample import save_grid, to_uint8
from ganforge.variants import get_variant

# Keys that may change when a run is resumed; anything else would not be the same run.
RESUMABLE_KEYS = {"steps", "minutes", "log_every", "sample_every", "eval_every", "eval_n",
                  "device", "threads", "data"}


class TrainingDiverged(GanforgeError):
    """Training produced non-finite values; the last checkpoint is left untouched."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GanforgeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GanforgeError("device 'cuda' was asked for but no CUDA GPU is available")
    return dev


class RunLock:
    """An exclusive lock on a run directory; the OS drops it if the process dies."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(run_dir / "train.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise GanforgeError(f"{run_dir} is in use by another training process") from None

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class BatchSampler:
    """Draws minibatches from a uint8 image tensor in a reshuffled order each epoch.

    Its state (generator state at the start of the epoch, epoch, position) is saved in the
    checkpoint, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, images: torch.Tensor, seed: int):
        self.images = images  # uint8 [N, C, H, W], on the training device
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.pos = 0, 0
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_state = self.gen.get_state()
        self.perm = torch.randperm(len(self.images), generator=self.gen)

    def next(self, n: int) -> torch.Tensor:
        parts = []
        while n > 0:
            if self.pos == len(self.perm):
                self.epoch, self.pos = self.epoch + 1, 0
                self._new_epoch()
            take = min(n, len(self.perm) - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos, n = self.pos + take, n - take
        idx = torch.cat(parts).to(self.images.device)
        return self.images[idx].float().div_(127.5).sub_(1.0)  # [n, C, H, W] in [-1, 1]

    def state(self) -> tuple[dict[str, int], torch.Tensor]:
        return {"epoch": self.epoch, "pos": self.pos}, self.epoch_state

    def restore(self, s: dict[str, int], epoch_state: torch.Tensor) -> None:
        self.gen.set_state(epoch_state)
        self._new_epoch()
        self.epoch, self.pos = s["epoch"], s["pos"]


def make_optimizer(cfg: TrainConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    ema_p, p = list(G_ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_p, p, 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


@dataclass
class Stats:
    """Per-interval sums of tensors; read back to the host once per log line."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist()
        out = {k: v / self.counts[k] for k, v in zip(keys, values, strict=True)}
        self.sums, self.counts = {}, {}
        return out


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_log: dict[str, Any]
    checkpoint: Path


def _prepare_run(run_dir: Path, cfg: TrainConfig, resume: bool,
                 overrides: dict[str, Any]) -> tuple[TrainConfig, checkpoint.Checkpoint | None]:
    latest = run_dir / "checkpoints" / "latest.safetensors"
    if resume:
        if not latest.exists():
            raise GanforgeError(f"nothing to resume: {run_dir} holds no run "
                                "(no checkpoints/latest.safetensors)")
        ckpt = checkpoint.load_checkpoint(latest)
        saved = ckpt.config
        changed = sorted(k for k, v in overrides.items()
                         if k not in RESUMABLE_KEYS and saved.get(k) != v)
        if changed:
            raise GanforgeError(f"cannot change {', '.join(changed)} when resuming; start a new "
                                "run with --out instead")
        merged = {**saved, **{k: v for k, v in overrides.items() if k in RESUMABLE_KEYS}}
        return config_from_dict(merged), ckpt
    if latest.exists():
        raise GanforgeError(f"{run_dir} already holds a run; add --resume to continue it, or "
                            "choose another --out")
    return cfg, None


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          overrides: dict[str, Any] | None = None, progress: bool = True,
          fault_hook: Any = None) -> TrainResult:
    """Train (or resume) a run. `overrides` are the keys the user set explicitly (checked
    against the saved config on resume). `fault_hook(step, nets)` is a test hook."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    lock = RunLock(run_dir)
    try:
        cfg, ckpt = _prepare_run(run_dir, cfg, resume, overrides or {})
        return _train(cfg, run_dir, ckpt, progress, fault_hook)
    finally:
        lock.release()
        if created and [p.name for p in run_dir.iterdir()] == ["train.lock"]:
            shutil.rmtree(run_dir)  # a run that failed before writing anything leaves no trace


def _train(cfg: TrainConfig, run_dir: Path, ckpt: checkpoint.Checkpoint | None,
           progress: bool, fault_hook: Any) -> TrainResult:
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    variant = get_variant(cfg.variant)
    variant.check(cfg)
    ds = data.resolve(cfg.data, size=cfg.size, channels=cfg.channels, crop=cfg.crop,
                      progress=progress)
    if ckpt is not None:
        saved = ckpt.meta["state"]
        if (ds.size, ds.channels) != (saved["size"], saved["channels"]):
            raise GanforgeError(f"the data {cfg.data} is {ds.size}px/{ds.channels}ch but the run "
                                f"was trained on {saved['size']}px/{saved['channels']}ch")
    size, channels = ds.size, ds.channels

    torch.manual_seed(cfg.seed)
    nets = variant.build(cfg, size, channels)
    G, D = nets["G"].to(device), nets["D"].to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema > 0 else None
    opt_G = make_optimizer(cfg, G.parameters(), cfg.lr_g)
    opt_D = make_optimizer(cfg, D.parameters(), cfg.lr_d)
    images = torch.from_numpy(np.array(ds.images)).permute(0, 3, 1, 2)  # [N, C, H, W]
    sampler = BatchSampler(images.contiguous().to(device), seed=cfg.seed)
    noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    z_fixed = variant.sample_z(cfg.grid_size, cfg, torch.Generator().manual_seed(cfg.seed + 2))
    sched = {"d_steps": 0, "g_steps": 0, "d_choices": 0, "g_choices": 0, "kimg": 0.0}
    state: dict[str, Any] = {"best_fid": None, "best_step": None}

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise GanforgeError("amp=fp16 needs a CUDA GPU; use amp=bf16 on CPU")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                              enabled=amp_dtype is not None)

    modules = {"G": G, "D": D, **({"G_ema": G_ema} if G_ema is not None else {})}
    step = 0
    if ckpt is not None:
        for name, m in modules.items():
            ckpt.load_module(m, name)
        ckpt.load_optimizer(opt_G, "opt_G")
        ckpt.load_optimizer(opt_D, "opt_D")
        step = ckpt.step
        s = ckpt.meta["state"]
        sched.update(s["sched"])
        state.update({k: s[k] for k in ("best_fid", "best_step")})
        sampler.restore(s["sampler"], ckpt.tensors["rng.data_epoch"])
        noise.set_state(ckpt.tensors["rng.noise"].to(noise.get_state().device))
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        if device.type == "cuda" and "rng.cuda" in ckpt.tensors:
            torch.cuda.set_rng_state(ckpt.tensors["rng.cuda"], device)
        z_fixed = ckpt.tensors["z_fixed"]
        _trim_log(run_dir / "metrics.jsonl", step)
    io.write_json(run_dir / "config.json", cfg.to_dict())

    def save(path: Path) -> None:
        s_state, epoch_state = sampler.state()
        tensors = {"rng.torch": torch.get_rng_state(), "rng.noise": noise.get_state(),
                   "rng.data_epoch": epoch_state, "z_fixed": z_fixed}
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        checkpoint.save_checkpoint(
            path, config=cfg.to_dict(), step=step, modules=modules,
            optimizers={"opt_G": opt_G, "opt_D": opt_D}, tensors=tensors,
            state={**state, "sched": sched, "sampler": s_state, "size": size,
                   "channels": channels, "data_key": ds.key, "data_split": ds.split})

    def write_grid() -> None:
        G_show = G_ema if G_ema is not None else G
        was_training = G_show.training
        G_show.eval()
        with torch.no_grad(), autocast():
            fake = G_show(z_fixed.to(device))
        G_show.train(was_training)
        save_grid(run_dir / "samples" / f"step-{step:06d}.png", to_uint8(fake),
                  upscale=2 if size < 64 else 0)

    def d_step(real: torch.Tensor) -> None:
        z = variant.sample_z(real.shape[0], cfg, noise, device)
        with torch.no_grad(), autocast():
            fake = G(z)
        with autocast():
            loss_D, s = variant.d_loss(nets, cfg, real, fake.float())
        opt_D.zero_grad(set_to_none=True)
        scaler.scale(loss_D).backward()
        scaler.unscale_(opt_D)
        s["grad_norm_D"] = grad_norm(D)
        scaler.step(opt_D)
        scaler.update()
        variant.after_d_step(nets, cfg)
        stats.add(s)
        sched["d_steps"] += 1
        sched["kimg"] += real.shape[0] / 1000

    def g_step() -> None:
        z = variant.sample_z(cfg.batch_size, cfg, noise, device)
        D.requires_grad_(False)  # the G step needs no D gradients
        with autocast():
            loss_G, s = variant.g_loss(nets, cfg, G(z))
        opt_G.zero_grad(set_to_none=True)
        scaler.scale(loss_G).backward()
        scaler.unscale_(opt_G)
        s["grad_norm_G"] = grad_norm(G)
        scaler.step(opt_G)
        scaler.update()
        D.requires_grad_(True)
        if G_ema is not None:
            ema_update(G_ema, G, cfg.ema)
        stats.add(s)
        sched["g_steps"] += 1

    def d_is_losing(real: torch.Tensor) -> bool:
        with torch.no_grad(), autocast():
            z = variant.sample_z(real.shape[0], cfg, noise, device)
            j = variant.judge(cfg, D(real).float(), D(G(z)).float())
        acc = 0.5 * (j["d_acc_real"] + j["d_acc_fake"])
        return bool(j["g_fool_rate"] >= acc)

    stats = Stats()
    G.train()
    D.train()
    t_start = time.monotonic()
    t_log, kimg_log = t_start, sched["kimg"]
    last: dict[str, Any] = {}
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True)
    ran = False
    while step < cfg.steps:
        if cfg.minutes and time.monotonic() - t_start >= cfg.minutes * 60:
            break
        ran = True
        if cfg.schedule == "adaptive":
            real = sampler.next(cfg.batch_size)
            if d_is_losing(real):
                sched["d_choices"] += 1
                d_step(real)
                for _ in range(cfg.adaptive_d_steps - 1):
                    d_step(sampler.next(cfg.batch_size))
                continue
            sched["g_choices"] += 1
        else:
            for _ in range(cfg.n_critic):
                d_step(sampler.next(cfg.batch_size))
        g_step()
        step += 1
        if fault_hook is not None:
            fault_hook(step, nets)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.monotonic()
            rec = {"kind": "train", "step": step, "kimg": round(sched["kimg"], 3),
                   "time_s": round(now - t_start, 3),
                   "images_per_s": round((sched["kimg"] - kimg_log) * 1000 / max(now - t_log,
                                                                                 1e-9), 1),
                   **{k: round(v, 6) for k, v in stats.pop().items()}}
            if cfg.schedule == "adaptive":
                total = max(1, sched["d_choices"] + sched["g_choices"])
                rec["g_choice_rate"] = round(sched["g_choices"] / total, 4)
            bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise TrainingDiverged(
                    f"training diverged at step {step}: {', '.join(bad)} became non-finite; "
                    "the last checkpoint is intact (try a lower lr_d/lr_g or --resume)")
            io.append_jsonl(run_dir / "metrics.jsonl", rec)
            bar.set_postfix(loss_D=f"{rec.get('loss_D', 0):.3f}",
                            loss_G=f"{rec.get('loss_G', 0):.3f}",
                            img_s=f"{rec['images_per_s']:.0f}")
            last, t_log, kimg_log = rec, now, sched["kimg"]
        if step % cfg.sample_every == 0 or step == cfg.steps:
            _checkpoint_interval(run_dir, save, write_grid)
    bar.close()
    if ran and step % cfg.sample_every != 0 and step != cfg.steps:
        _checkpoint_interval(run_dir, save, write_grid)  # stopped by the clock
    latest = run_dir / "checkpoints" / "latest.safetensors"
    if not latest.exists():
        save(latest)
    return TrainResult(run_dir=run_dir, step=step, last_log=last, checkpoint=latest)


def _checkpoint_interval(run_dir: Path, save: Any, write_grid: Any) -> None:
    write_grid()
    save(run_dir / "checkpoints" / "latest.safetensors")
    plots.plot_run(run_dir)


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (and any torn last line)."""
    if not path.exists():
        return
    records = [r for r in io.read_jsonl(path) if r.get("step", 0) <= step]
    io.write_jsonl(path, records)


def copy_checkpoint(src: Path, dst: Path) -> None:
    with open(src, "rb") as f_in, io.atomic_open(dst, "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
