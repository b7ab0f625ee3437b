"""The training loop: one linear loop, generic over variants.

The loop owns optimisers (one per group: `G` and `D`, each possibly holding several
networks), backward/step, freezing the idle group, the D/G schedule, AMP, EMA, logging, sample
grids, evaluation, the health monitor and checkpoints; the variant owns its data, networks,
generator inputs and loss math (see ganforge.variants.base). A batch is a dict of tensors.

A run directory holds:
    config.json                    the effective config
    metrics.jsonl                  {"kind": "train"} per log interval, {"kind": "eval"} per
                                   evaluation, {"kind": "health"} per problem found
    samples/step-XXXXXX.png        the fixed-latent grid after every sample interval
    plots/*.png                    losses, D accuracy / fooling rate, gradient norms, quality
    checkpoints/latest.safetensors everything needed to resume exactly
    checkpoints/best.safetensors   the best checkpoint by quick FID (see ganforge.selection)
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ganforge import amp_probe, checkpoint, io, plots, selection
from ganforge import distributed as dist_
from ganforge.augment import Augment, AugmentedD, parse_p, parse_policy
from ganforge.config import TrainConfig, config_from_dict
from ganforge.devices import native_bf16, pick_device
from ganforge.errors import GanforgeError
from ganforge.health import HealthMonitor, Problem, diversity
from ganforge.losses import loss_scale
from ganforge.runstate import NoiseStream, RunState
from ganforge.sample import make_grid, save_grid, to_uint8
from ganforge.tboard import TensorBoardLog
from ganforge.train_utils import (
    BatchSampler,
    RunLock,
    Stats,
    backward_step,
    compile_nets,
    ema_decay,
    ema_update,
    make_optimizer,
    standing_statistics,
    sync_batchnorm,
)
from ganforge.variants import get_variant
from ganforge.variants.base import lazy_r1

# Keys that may change when a run is resumed; anything else would not be the same run.
RESUMABLE_KEYS = {"tensorboard", "steps", "minutes", "log_every", "sample_every", "eval_every",
                  "eval_n", "device", "threads", "channels_last", "data", "health", "on_problem",
                  "max_rollbacks", "compile", "overlap_grads"}


# Data sets up to this many images get the memorisation and augmentation-leak checks with every
# quick evaluation (cheap pixel-space work; they matter where D can memorise the data).
SMALL_DATA = 10_000


class TrainingStopped(GanforgeError):
    """The health monitor stopped the run; the last good checkpoint is intact."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_log: dict[str, Any]
    checkpoint: Path


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # "off": None


class Trainer:
    """Builds everything a run needs; `run()` is the loop."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool = True,
                 fault_hook: Any = None, dist: dist_.Dist | None = None,
                 device: str | None = None):
        self.cfg, self.run_dir, self.fault_hook = cfg, run_dir, fault_hook
        self.dist = dist = dist or dist_.Dist()
        self.main = dist.main
        self.progress = progress and self.main
        if cfg.batch_size % dist.world:
            raise GanforgeError(f"batch_size {cfg.batch_size} (the global batch) must be "
                                f"divisible by the {dist.world} processes")
        self.device = device = pick_device(device or cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.variant = variant = get_variant(cfg.variant)
        variant.check(cfg)
        self.data = td = variant.load_data(cfg, self.progress)
        self.ds = td.ref  # the images generated ones should look like (FID reference)
        self.size, self.channels = td.size, td.channels
        self.classes: list[str] = list(td.classes)
        self.n_classes = len(self.classes)

        torch.manual_seed(cfg.seed)
        self.nets = variant.build(cfg, td.size, td.channels, n_classes=self.n_classes)
        if cfg.sync_bn:
            self.nets = sync_batchnorm(self.nets, device, dist)
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for m in self.nets.values():
            m.to(device, memory_format=fmt)
        self.G, self.D = self.nets["G"], self.nets["D"]
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema > 0 else None
        if cfg.compile:
            compile_nets(self.G, self.D, cfg, self.progress)
        # differentiable augmentation: the loss math gets a D that augments what it is shown
        self.augment: Augment | None = None
        self.seen = self.nets
        if cfg.augment:
            self.augment = Augment(parse_policy(cfg.augment), parse_p(cfg.augment_p),
                                   cfg.augment_target, cfg.augment_kimg).to(device)
            self.seen = {**self.nets, "D": AugmentedD(self.D, self.augment)}
        # every process holds the same G and D (and augmentation p); extras (CycleGAN's pool)
        # are per process
        self.synced = {"G": self.G, "D": self.D,
                       **({"G_ema": self.G_ema} if self.G_ema is not None else {}),
                       **({"augment": self.augment} if self.augment is not None else {})}
        self.modules = {**self.synced,
                        **{k: m for k, m in self.nets.items() if k not in ("G", "D")}}
        self.opt_G = make_optimizer(cfg, self.G.parameters(), cfg.lr_g)
        self.opt_D = make_optimizer(cfg, self.D.parameters(), cfg.lr_d)
        # per-process streams for dropout and the gradient penalty's mixing rates; the nets
        # above were built from the same seed everywhere, so they start identical
        torch.manual_seed(cfg.seed + 7919 * dist.rank)
        # one sampler per independently shuffled part (CycleGAN: domain A, domain B)
        self.samplers = [BatchSampler(_tensors(part, device), seed=cfg.seed + 1009 * i,
                                      memory_format=fmt)
                         for i, part in enumerate(td.parts)]
        self.sampler = self.samplers[0]
        self.noise = NoiseStream(cfg.seed + 1, device)
        self.fixed = variant.fixed_inputs(cfg, self.n_classes, td.parts,
                                          torch.Generator().manual_seed(cfg.seed + 2))
        self.last_batch: dict[str, torch.Tensor] = {}
        self.reuse = variant.reuses_fakes(cfg)
        self.last_fake: torch.Tensor | None = None  # the D step's fakes, kept for the G step
        self.step = 0
        self.sched = {"d_steps": 0, "g_steps": 0, "d_choices": 0, "g_choices": 0, "kimg": 0.0}
        self.state: dict[str, Any] = {"best_fid": None, "best_step": None, "lr_scale": 1.0,
                                      "rollbacks": 0}

        amp = native_bf16(device) if cfg.amp == "auto" else cfg.amp
        if dist.enabled:  # one precision for every process, whatever each one's CPU says
            amp = dist_.broadcast_object(amp, dist)
        self.amp_dtype = AMP_DTYPES.get(amp)
        # the flags allow bfloat16 on this CPU; whether it is faster there takes a measurement,
        # made by every session (a resume may run on another machine) before it trains; not
        # of compiled networks, whose copies would each compile first
        self.amp_probe_due = (cfg.amp == "auto" and amp == "bf16" and device.type == "cpu"
                              and not cfg.compile)
        if cfg.amp == "fp16" and device.type != "cuda" and self.progress:
            print("note: amp=fp16 on a CPU is slower than float32 (it exists to test the GPU "
                  "path); amp=bf16 is the CPU's mixed precision")
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        # what a resume must restore besides weights and optimisers, as one object
        self.run_state = RunState(self.samplers, self.noise, self.scaler, self.modules,
                                  self.synced, dist, device)
        # gradients averaged across processes while backward runs (overlap_grads)
        self.reducers = {id(m): dist_.GradReducer(m, dist) for m in (self.G, self.D)} \
            if dist.enabled and cfg.overlap_grads else {}
        self.stats = Stats()
        real_div = diversity(self.sampler.images[: max(16, cfg.grid_size)].float() / 127.5 - 1)
        self.health = HealthMonitor(cfg, real_div) if cfg.health else None
        self.nonfinite = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)
        self.evaluator = None
        self.clock_used = 0.0  # share of this session's --minutes spent (see tick_clock)
        self.memorization = None  # PixelMemorization of the training set, made when first used
        self.improved = False
        self.tb = TensorBoardLog(run_dir, enabled=False)  # opened by run()

    # -- state ----------------------------------------------------------------------------

    def probe_amp(self) -> amp_probe.AmpChoice:
        """amp=auto on a CPU with native bfloat16: time training steps on one real batch in
        float32 and in bfloat16 (ganforge.amp_probe), as the loop takes them: n_critic D
        steps, the G step with D frozen and, where the loop does, scoring the D step's
        fakes, each with its optimiser step. Nothing of the run changes: copies of the
        networks and optimisers take the gradients, updates and BatchNorm statistics, the
        samplers are put back where they were, and the global RNG (dropout, augmentation,
        CycleGAN's pool) is forked. Under torchrun every process takes rank 0's choice."""
        cfg, variant = self.cfg, self.variant
        copies = copy.deepcopy({"seen": self.seen, "G": self.G, "D": self.D})
        nets, G, D = copies["seen"], copies["G"], copies["D"]
        opt_G = make_optimizer(cfg, G.parameters(), cfg.lr_g)
        opt_D = make_optimizer(cfg, D.parameters(), cfg.lr_d)
        batch: dict[str, torch.Tensor] = {}
        for s in self.samplers:
            where = s.state()
            batch.update(s.next(cfg.batch_size, self.dist.rank, self.dist.world))
            s.restore(*where)
        full = variant.sample_inputs(cfg.batch_size, cfg, torch.Generator().manual_seed(0),
                                     self.device, self.n_classes)
        inputs = {k: v[self.dist.rank::self.dist.world] for k, v in full.items()}
        d_cfg = lazy_r1(cfg, 1)  # the common D step: with lazy R1, one without the penalty

        def step(dtype: torch.dtype | None) -> None:
            def autocast() -> contextlib.AbstractContextManager:
                return torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                      enabled=dtype is not None)

            fake = None
            for _ in range(cfg.n_critic):
                with autocast():
                    fake = G(inputs["z"]) if self.reuse else None
                    loss, _ = variant.d_objective(nets, d_cfg, batch, inputs, fake)
                loss.backward()
                opt_D.step()
                opt_D.zero_grad(set_to_none=True)
            D.requires_grad_(False)
            with autocast():
                loss, _ = variant.g_objective(nets, cfg, batch, inputs, fake)
            loss.backward()
            D.requires_grad_(True)
            opt_G.step()
            opt_G.zero_grad(set_to_none=True)

        with torch.random.fork_rng(devices=[]):
            choice = amp_probe.choose(amp_probe.timer(step))
        return dist_.broadcast_object(choice, self.dist) if self.dist.enabled else choice

    @property
    def latest(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.safetensors"

    @property
    def z_fixed(self) -> torch.Tensor | None:
        return self.fixed.get("z")

    def save(self, path: Path) -> None:
        """Write a checkpoint (rank 0; every process must call it: RNG states are gathered)."""
        # samplers, latent stream, RNGs, loss scaler, per-process modules (CycleGAN's pool)
        tensors, run_state = self.run_state.state_dict()
        if self.z_fixed is not None:
            tensors["z_fixed"] = self.z_fixed
        for m in self.synced.values():
            dist_.broadcast_buffers(m, self.dist)
        digests = dist_.gather_object(dist_.digest(self.synced), self.dist)
        if len(set(digests)) > 1:
            raise GanforgeError(f"the {self.dist.world} processes no longer hold the same weights "
                                f"at step {self.step} (digests {digests}); this is a bug")
        if not self.main:
            return
        checkpoint.save_checkpoint(
            path, config=self.cfg.to_dict(), step=self.step, modules=self.synced,
            optimizers={"opt_G": self.opt_G, "opt_D": self.opt_D}, tensors=tensors,
            state={**self.state, "sched": self.sched, **run_state,
                   "size": self.size, "channels": self.channels,
                   "data_key": self.data.key, "data_split": self.data.split,
                   "kind": self.variant.kind, "classes": self.classes,
                   "world": self.dist.world, "rank_digests": digests,
                   "health": self.health.state() if self.health is not None else None})

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        saved = ckpt.meta["state"]
        if (self.size, self.channels) != (saved["size"], saved["channels"]):
            raise GanforgeError(f"the data {self.cfg.data} is {self.size}px/{self.channels}ch "
                                f"but the run was trained on {saved['size']}px/"
                                f"{saved['channels']}ch")
        if saved.get("data_key") not in (None, self.data.key):
            raise GanforgeError(f"{self.cfg.data} is not the data this run was trained on (its "
                                "content hash differs); point --data at the original images or "
                                "start a new run")
        for name, m in self.synced.items():
            ckpt.load_module(m, name)
        if self.health is not None and saved.get("health"):
            self.health.load_state(saved["health"])
        ckpt.load_optimizer(self.opt_G, "opt_G")
        ckpt.load_optimizer(self.opt_D, "opt_D")
        self.step = ckpt.step
        self.sched.update(saved["sched"])
        self.state.update({k: saved[k] for k in self.state if k in saved})
        if saved.get("classes", self.classes) != self.classes:
            raise GanforgeError(f"the data {self.cfg.data} has classes {self.classes} but the "
                                f"run was trained on {saved['classes']}")
        self.run_state.load_state_dict(ckpt.tensors, saved, ckpt.load_module)
        if "z_fixed" in ckpt.tensors:
            self.fixed["z"] = ckpt.tensors["z_fixed"]
        self._set_lr()
        if self.main:
            _trim_log(self.run_dir / "metrics.jsonl", self.step)

    def lr_factor(self) -> float:
        """Linear decay to 0 over the last `lr_decay` fraction of the run (1 before it): of the
        steps, or of this session's clock when `minutes` ends the run first."""
        if not self.cfg.lr_decay:
            return 1.0
        left = (self.cfg.steps - self.step) / self.cfg.steps
        if self.cfg.minutes:
            left = min(left, 1.0 - self.clock_used)
        return min(1.0, max(0.0, left / self.cfg.lr_decay))

    def _set_lr(self) -> None:
        for opt, lr in ((self.opt_G, self.cfg.lr_g), (self.opt_D, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * self.state["lr_scale"] * self.lr_factor()

    # -- one step of each network -----------------------------------------------------------

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for the forward passes and the loss math; with fp16 loss scaling,
        also the scale the gradient penalty's inner backward must use (ganforge.losses)."""
        scale = self.scaler.scale(self._one) if self.scaler.is_enabled() else None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None), loss_scale(scale):
            yield

    def inputs(self) -> dict[str, torch.Tensor]:
        """This process's slice of the global batch of generator inputs (z, class labels)."""
        full = self.variant.sample_inputs(self.cfg.batch_size, self.cfg, self.noise.next(),
                                          self.device, self.n_classes)
        return {k: v[self.dist.rank::self.dist.world] for k, v in full.items()}

    def latents(self) -> torch.Tensor:
        """This process's slice of the global batch of latents: [batch_size / world, z_dim]."""
        return self.inputs()["z"]

    def real_batch(self) -> dict[str, torch.Tensor]:
        """This process's slice of the next global batch: {"real": ...} or the variant's keys."""
        batch: dict[str, torch.Tensor] = {}
        for s in self.samplers:
            batch.update(s.next(self.cfg.batch_size, self.dist.rank, self.dist.world))
        return batch

    def apply(self, loss: torch.Tensor, module: torch.nn.Module,
              opt: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backward, average gradients across processes, step; returns the gradient norm
        (0 for a step the fp16 loss scaler skipped, counted in `amp_skips_D`/`_G` instead)
        and, with loss scaling, whether the step was skipped (see `_record`)."""
        norm, skipped = backward_step(loss, module, opt, self.scaler, self.dist,
                                      self.reducers.get(id(module)))
        if skipped is not None:
            group = "D" if module is self.D else "G"
            self.stats.add({f"amp_skips_{group}": skipped,
                            "amp_scale": self.scaler.scale(self._one)})
        return norm, skipped

    def d_step(self, batch: dict[str, torch.Tensor]) -> None:
        cfg, D, opt = self.cfg, self.D, self.opt_D
        inputs = self.inputs()
        self.last_batch = batch
        with self.autocast():
            # reusing fakes: make them with G's graph kept; D's loss sees them detached
            fake = self.G(inputs["z"]) if self.reuse else None
            loss_D, s = self.variant.d_objective(self.seen, lazy_r1(cfg, self.sched["d_steps"]),
                                                 batch, inputs, fake)
        self.last_fake = fake
        s["grad_norm_D"], skipped = self.apply(loss_D, D, opt)
        self.variant.after_d_step(self.nets, cfg)
        if self.augment is not None:
            self.adapt_augmentation(s)
        self._record(s, skipped)
        self.sched["d_steps"] += 1
        self.sched["kimg"] += cfg.batch_size / 1000

    def g_step(self) -> None:
        cfg, G, opt = self.cfg, self.G, self.opt_G
        fake, self.last_fake = self.last_fake, None
        inputs = self.inputs() if fake is None else {}
        self.D.requires_grad_(False)  # the G step needs no D parameter gradients
        with self.autocast():
            loss_G, s = self.variant.g_objective(self.seen, cfg, self.last_batch, inputs, fake)
        s["grad_norm_G"], skipped = self.apply(loss_G, G, opt)
        self.D.requires_grad_(True)
        if self.G_ema is not None:
            ema_update(self.G_ema, G, ema_decay(cfg.ema, self.sched["g_steps"]))
        self._record(s, skipped)
        self.sched["g_steps"] += 1

    def adapt_augmentation(self, s: dict[str, torch.Tensor]) -> None:
        """After a D step: feed D's accuracy on the (augmented) real images to the ADA signal,
        adjust p every `interval` D steps (counted by the schedule, so resume keeps the
        rhythm), and log p and r_t."""
        aug = self.augment
        assert aug is not None
        aug.observe(s["d_acc_real"])
        if (self.sched["d_steps"] + 1) % aug.interval == 0:
            aug.adjust(self.cfg.batch_size,
                       lambda t: dist_.all_reduce_sum_(t, self.dist))
        s["augment_p"], s["r_t"] = aug.p, aug.r_t

    def _record(self, s: dict[str, torch.Tensor], skipped: torch.Tensor | None = None) -> None:
        if skipped is not None:
            # amp=fp16: in a step the loss scaler skipped, a loss may be inf/NaN from the
            # overflow itself (a gradient penalty holds the scaled inner gradient); that is
            # no divergence, so it counts 0 in the averages and the non-finite flags (a run
            # whose every step overflows is caught by its amp_skips, health.check_interval)
            ok = skipped == 0
            s = {k: torch.where(ok | torch.isfinite(v), v, torch.zeros_like(v))
                 for k, v in s.items()}
        self.stats.add(s)
        if self.health is not None:
            self.nonfinite = self.nonfinite + self.health.step_flags(s)

    def d_is_losing(self, batch: dict[str, torch.Tensor]) -> bool:
        """Adaptive schedule (unconditional variants): is D losing on this minibatch (G fools
        it at least as often as D is right)?"""
        with torch.no_grad(), self.autocast():
            j = self.variant.judge(self.cfg, self.D(batch["real"]).float(),
                                   self.D(self.G(self.latents())).float())
        # the choice depends on this very minibatch, so one read back to the host per step is
        # inherent to this schedule; it is one, not one per figure
        acc_real, acc_fake, fool = dist_.all_reduce_mean(
            torch.stack([j["d_acc_real"], j["d_acc_fake"], j["g_fool_rate"]]).tolist(),
            self.dist, self.device)
        return fool >= 0.5 * (acc_real + acc_fake)

    # -- reporting ------------------------------------------------------------------------

    @torch.no_grad()
    def grid_images(self) -> tuple[torch.Tensor, int | None]:
        """The fixed-input grid ([N, C, H, W] in [-1, 1]) and its images per row."""
        G_show = self.G_ema if self.G_ema is not None else self.G
        was_training = G_show.training
        G_show.eval()
        fixed = {k: v.to(self.device) for k, v in self.fixed.items()}
        with self.autocast():
            fake, nrow = self.variant.show(G_show, fixed)
        G_show.train(was_training)
        return fake.float(), nrow

    def log_interval(self, t_now: float) -> dict[str, Any]:
        sched = self.sched
        rec = {"kind": "train", "step": self.step, "kimg": round(sched["kimg"], 3),
               "time_s": round(t_now - self.t_start, 3),
               "images_per_s": round((sched["kimg"] - self.kimg_log) * 1000
                                     / max(t_now - self.t_log, 1e-9), 1),
               "lr_scale": self.state["lr_scale"], "lr_g": self.opt_G.param_groups[0]["lr"]}
        stats = self.stats.pop()
        keys = sorted(stats)  # the same keys on every process: the same steps ran everywhere
        values = dist_.all_reduce_mean([stats[k] for k in keys], self.dist, self.device)
        rec.update({k: round(v, 6) if math.isfinite(v) else v
                    for k, v in zip(keys, values, strict=True)})
        if self.cfg.schedule == "adaptive":
            total = max(1, sched["d_choices"] + sched["g_choices"])
            rec["g_choice_rate"] = round(sched["g_choices"] / total, 4)
        self.t_log, self.kimg_log = t_now, sched["kimg"]
        return rec

    def evaluate(self) -> dict[str, Any] | None:
        """Quick FID/KID of eval_n generated images against the training data. Every process
        calls it: each generates and scores its slice of the images, rank 0 computes the
        figures from the gathered features, and every process returns them."""
        if not self.cfg.eval_n or self.evaluator is False or self.variant.kind == "translation":
            return None  # translation models: `ganforge evaluate` scores them on held-out data
        from ganforge.metrics.training import TrainingEvaluator

        if self.evaluator is None:
            self.evaluator = TrainingEvaluator(self.ds, self.cfg.eval_n, self.device,
                                               progress=False, dist=self.dist)
        G_eval = self.G_ema if self.G_ema is not None else self.G
        # conditional G: every class equally often
        n_classes = self.n_classes if self.variant.kind == "conditional" else 0
        results = self.evaluator(G_eval, self.variant, self.cfg, self.cfg.seed + 3, n_classes)
        return dist_.broadcast_object(results, self.dist)

    def guard_rails(self) -> dict[str, Any]:
        """With each quick evaluation on a small data set (under SMALL_DATA images): how close
        generated images come to their nearest training image (`nn_dist`, `nn_ratio`; see
        PixelMemorization) and, with augmentation on (on any data set), whether its artifacts
        show in them (ganforge.augment.leak_check). Rank 0."""
        small = len(self.ds) <= SMALL_DATA
        if self.variant.kind == "translation" or not (small or self.augment is not None):
            return {}
        from ganforge.augment import leak_check
        from ganforge.metrics.memorization import PixelMemorization
        from ganforge.metrics.training import eval_inputs

        real = np.asarray(self.ds.images)  # uint8 [N, H, W, C]
        if self.memorization is None and small:
            self.memorization = PixelMemorization(real)
        n = min(self.cfg.eval_n, 500)
        n_classes = self.n_classes if self.variant.kind == "conditional" else 0
        z, c = eval_inputs(self.variant, self.cfg, n, self.cfg.seed + 3, n, n_classes)
        G = self.G_ema if self.G_ema is not None else self.G
        was_training = G.training
        G.eval()
        fake = []
        with torch.no_grad(), self.autocast():
            for i in range(0, n, 50):
                zi = z[i:i + 50].to(self.device)
                x = G(zi) if c is None else G(zi, c[i:i + 50].to(self.device))
                fake.append(to_uint8(x.float()))
        G.train(was_training)
        images = np.concatenate(fake)
        out: dict[str, Any] = self.memorization(images) if small else {}
        if self.augment is not None:
            out.update(leak_check(images, real[:: max(1, len(real) // n)][:n]))
            if out["leaks"] and self.progress:
                tqdm.write(f"ganforge: augmentation leak at step {self.step}: generated images "
                           f"show {' and '.join(out['leaks'])} artifacts (border "
                           f"{out['leak_border_fake']:.0%} vs {out['leak_border_real']:.0%} of "
                           f"real, cutout {out['leak_cutout_fake']:.0%} vs "
                           f"{out['leak_cutout_real']:.0%}); lower augment_p or use auto")
        return out

    def at_interval(self) -> bool:
        """Is this step a sample interval, an evaluation step or the last step?"""
        cfg = self.cfg
        return (self.step % cfg.sample_every == 0 or self.step == cfg.steps
                or bool(cfg.eval_n and cfg.eval_every and self.step % cfg.eval_every == 0))

    def ema_statistics(self) -> None:
        """Before G_ema is shown, scored or saved: BatchNorm statistics of its own, from 8
        batches of fresh inputs of a private seeded stream (the same on every process, so
        every process computes the same statistics)."""
        if self.G_ema is None or self.variant.kind == "translation":
            return
        gen = torch.Generator().manual_seed(self.cfg.seed + 4)
        n_classes = self.n_classes if self.variant.kind == "conditional" else 0

        def forward() -> None:
            inputs = self.variant.sample_inputs(self.cfg.batch_size, self.cfg, gen, "cpu",
                                                n_classes)
            with self.autocast():
                self.variant.show(self.G_ema, {k: v.to(self.device) for k, v in inputs.items()})

        standing_statistics(self.G_ema, forward)

    def interval(self, final: bool = False) -> Problem | None:
        """At every sample interval: grid and collapse check (rank 0; the outcome is shared
        with every process), evaluation (every process scores its share), checkpoint, plots."""
        for m in self.synced.values():
            dist_.broadcast_buffers(m, self.dist)
        self.ema_statistics()  # every process: with sync_bn its forwards are collective
        problem = self._interval_main() if self.main else None
        problem = dist_.broadcast_object(problem, self.dist)
        if problem is not None:
            return problem
        self.improved = False
        every = self.cfg.eval_every or self.cfg.sample_every
        final = final or self.step == self.cfg.steps
        if self.step % every == 0 or final and (self.step >= every or self.unscored()):
            results = self.evaluate()  # the same figures on every process
            if results is not None:
                if self.main:
                    self.log({"kind": "eval", "step": self.step, **results,
                              **self.guard_rails()})
                fid, lowest = results["fid"], self.state["best_fid"]
                if selection.replaces_best(fid, lowest):
                    self.state["best_step"], self.improved = self.step, True
                self.state["best_fid"] = selection.lowest_after(fid, lowest)
        self.save(self.latest)
        if self.main:
            if self.improved:
                _copy_file(self.latest, self.run_dir / "checkpoints" / "best.safetensors")
            plots.plot_run(self.run_dir)
        return None

    def unscored(self) -> bool:
        """A run on the clock, with evaluation on, that has no quick FID yet: when the clock
        stops it (a 3-minute demo at eval_every 5,000) it still gets one, as its best
        checkpoint, curve and explorer need it."""
        return bool(self.cfg.minutes > 0 and self.cfg.eval_n and self.state["best_fid"] is None)

    def log(self, record: dict[str, Any]) -> None:
        """One record to metrics.jsonl (and TensorBoard when installed); rank 0 only."""
        io.append_jsonl(self.run_dir / "metrics.jsonl", record)
        self.tb.record(record)

    def _interval_main(self) -> Problem | None:
        """Rank 0's part of an interval: the sample grid and the collapse check."""
        fake, nrow = self.grid_images()
        images = to_uint8(fake)
        save_grid(self.run_dir / "samples" / f"step-{self.step:06d}.png", images,
                  nrow=nrow, upscale=2 if self.size < 64 else 0)
        self.tb.grid(self.step, make_grid(images, nrow))
        if self.health is not None and self.variant.kind != "translation":
            return self.health.check_samples(self.step, fake)
        return None

    def handle(self, problem: Problem) -> None:
        """Roll back to the last good checkpoint with lower learning rates, or stop."""
        cfg = self.cfg
        record = {"kind": "health", "step": problem.step, "problem": problem.kind,
                  "detail": problem.detail}
        if cfg.on_problem == "stop" or self.state["rollbacks"] >= cfg.max_rollbacks:
            if self.main:
                self.log({**record, "action": "stop"})
            why = "" if cfg.on_problem == "stop" else f" after {cfg.max_rollbacks} rollbacks"
            raise TrainingStopped(f"stopped{why}: {problem.message()}. The last good "
                                  f"checkpoint is {self.latest}")
        ckpt = checkpoint.load_checkpoint(self.latest)
        rollbacks = self.state["rollbacks"] + 1
        scale = self.state["lr_scale"] * cfg.rollback_lr_factor
        self.restore(ckpt)
        self.state["rollbacks"], self.state["lr_scale"] = rollbacks, scale
        self._set_lr()
        self.stats.pop()
        self.nonfinite.zero_()
        if self.health is not None:
            self.health.stuck_since = None
        action = f"rolled back to step {ckpt.step}, learning rates x{scale:g}"
        if self.main:
            self.log({**record, "action": action})
            tqdm.write(f"ganforge: {problem.kind} at step {problem.step} ({problem.detail}); "
                       f"{action}")

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.tb = TensorBoardLog(self.run_dir, self.cfg.tensorboard and self.main)
        try:
            return self._loop()
        finally:
            self.tb.close()

    def tick_clock(self, clock: float) -> None:
        """Update `clock_used`, the share of this session's `clock` seconds spent (what stops
        the run and, with lr_decay, sets the learning rate): every step in one process; under
        torchrun at log steps only, from rank 0's clock (one broadcast per log interval), so
        every process stops at the same step with the same learning rates."""
        if self.dist.enabled and self.step % self.cfg.log_every:
            return
        used = (time.monotonic() - self.t_start) / clock
        self.clock_used = dist_.broadcast_object(used, self.dist) if self.dist.enabled else used

    def _loop(self) -> TrainResult:
        cfg, sched = self.cfg, self.sched
        if self.amp_probe_due:
            choice = self.probe_amp()
            self.amp_dtype = AMP_DTYPES.get(choice.amp)
            if self.main:
                print(choice.describe(), flush=True)
        if self.main:
            io.write_json(self.run_dir / "config.json", cfg.to_dict())
        if self.dist.enabled and self.main:
            per = cfg.batch_size // self.dist.world
            print(f"data-parallel: {self.dist.world} processes x {per} images = global batch "
                  f"{cfg.batch_size}; learning rates as configured (the global batch is what "
                  "the config sets, so no scaling rule applies)")
        if self.step == 0 and not dist_.broadcast_object(self.latest.exists(), self.dist):
            self.save(self.latest)  # step 0: a rollback target from the start
        self.G.train()
        self.D.train()
        self.t_start = self.t_log = time.monotonic()
        self.kimg_log = sched["kimg"]
        last: dict[str, Any] = {}
        clock = cfg.minutes * 60  # seconds of training this session (0: steps decide)
        if clock:  # the bar counts toward the clock: seconds, with the step in the postfix
            bar = tqdm(total=round(clock), desc="train", unit="s", disable=not self.progress,
                       dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s "
                       "[{elapsed}<{remaining}{postfix}]")
        else:
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step",
                       disable=not self.progress, dynamic_ncols=True)
        ran = False
        while self.step < cfg.steps:
            if clock:
                self.tick_clock(clock)
                if self.clock_used >= 1.0:
                    break
            ran = True
            if cfg.lr_decay:
                self._set_lr()
            if cfg.schedule == "adaptive":
                real = self.real_batch()
                self.last_batch = real
                if self.d_is_losing(real):
                    sched["d_choices"] += 1
                    self.d_step(real)
                    for _ in range(cfg.adaptive_d_steps - 1):
                        self.d_step(self.real_batch())
                    continue
                sched["g_choices"] += 1
            else:
                for _ in range(cfg.n_critic):
                    self.d_step(self.real_batch())
            self.g_step()
            self.step += 1
            if self.fault_hook is not None:
                self.fault_hook(self)
            if clock:
                bar.update(min(clock, time.monotonic() - self.t_start) - bar.n)
            else:
                bar.update(1)
            problem = None
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rec = self.log_interval(time.monotonic())
                (nonfinite,) = dist_.all_reduce_mean([float(self.nonfinite)], self.dist,
                                                     self.device)
                self.nonfinite.zero_()
                if self.health is not None:
                    problem = self.health.check_interval(self.step, rec, nonfinite)
                problem = dist_.broadcast_object(problem, self.dist)
                if problem is None and self.main:
                    self.log(rec)
                    bar.set_postfix(**({"step": self.step} if clock else {}),
                                    loss_D=f"{rec.get('loss_D', 0):.3f}",
                                    loss_G=f"{rec.get('loss_G', 0):.3f}",
                                    img_s=f"{rec['images_per_s']:.0f}")
                    last = rec
            if problem is None and self.at_interval():
                problem = self.interval()
            if problem is not None:
                self.handle(problem)
                if not clock:
                    bar.n = self.step
                    bar.refresh()
        bar.close()
        # stopped by the clock: the last step's interval, unless it had one (with its
        # evaluation when the run has none yet)
        if ran and (not self.at_interval() or self.unscored()):
            problem = self.interval(final=True)
            if problem is not None:
                raise TrainingStopped(problem.message())
        return TrainResult(run_dir=self.run_dir, step=self.step, last_log=last,
                           checkpoint=self.latest)


def _prepare_run(run_dir: Path, cfg: TrainConfig | None, resume: bool,
                 overrides: dict[str, Any]) -> tuple[TrainConfig, checkpoint.Checkpoint | None]:
    latest = run_dir / "checkpoints" / "latest.safetensors"
    if resume:
        if not latest.exists():
            raise GanforgeError(f"nothing to resume: {run_dir} holds no run "
                                "(no checkpoints/latest.safetensors)")
        ckpt = checkpoint.load_checkpoint(latest)
        saved = ckpt.config
        # a key missing from an older checkpoint's config had its default value then, or
        # the value config.LEGACY names
        was = config_from_dict(saved)
        changed = sorted(k for k, v in overrides.items()
                         if k not in RESUMABLE_KEYS and getattr(was, k, None) != v)
        if changed:
            raise GanforgeError(f"cannot change {', '.join(changed)} when resuming; start a new "
                                "run with --out instead")
        merged = {**saved, **{k: v for k, v in overrides.items() if k in RESUMABLE_KEYS}}
        return config_from_dict(merged), ckpt
    if latest.exists():
        raise GanforgeError(f"{run_dir} already holds a run; add --resume to continue it, or "
                            "choose another --out")
    assert cfg is not None
    return cfg, None


def train(cfg: TrainConfig | None, run_dir: str | Path, *, resume: bool = False,
          overrides: dict[str, Any] | None = None, progress: bool = True,
          fault_hook: Any = None) -> TrainResult:
    """Train a new run (cfg) or resume the run in run_dir (cfg None; `overrides` are the keys
    the user set, checked against the saved config). `fault_hook(trainer)` runs after every
    generator step: a hook for tests that inject faults."""
    run_dir = Path(run_dir)
    pref = cfg.device if cfg is not None else (overrides or {}).get("device", "auto")
    d, device = dist_.init(pref)
    created = not run_dir.exists()
    lock = None
    try:
        lock = RunLock(run_dir) if d.main else None
        cfg, ckpt = _prepare_run(run_dir, cfg, resume, overrides or {})
        dist_.barrier(d)  # everyone has checked the run directory before anyone writes
        trainer = Trainer(cfg, run_dir, progress, fault_hook, dist=d,
                          device=device if d.enabled else None)
        if ckpt is not None:
            trainer.restore(ckpt)
        result = trainer.run()
        if d.enabled:  # leave together: a peer vanishing mid-teardown aborts gloo
            dist_.barrier(d)
            dist_.shutdown()
        return result
    finally:
        if d.enabled:
            dist_.shutdown()  # after an error too: a peer blocked in a collective fails at once
        if lock is not None:
            lock.release()
            if created and [p.name for p in run_dir.iterdir()] == ["train.lock"]:
                shutil.rmtree(run_dir)  # a run that failed before writing anything: no trace


def _tensors(part: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A data part's arrays as tensors on the device: images uint8 [N, C, H, W], labels [N]."""
    out = {}
    for k, a in part.items():
        t = torch.from_numpy(np.array(a))
        out[k] = (t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t).to(device)
    return out


def _trim_log(path: Path, step: int) -> None:
    """On resume or rollback, drop log lines written after the checkpoint (and a torn last
    line); health records are kept, they are the history of what went wrong."""
    if not path.exists():
        return
    records = [r for r in io.read_jsonl(path)
               if r.get("step", 0) <= step or r.get("kind") == "health"]
    io.write_jsonl(path, records)


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as f_in, io.atomic_open(dst, "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
