"""One training config: the single source of truth for the CLI, config files and checkpoints.

Values are layered: the dataclass defaults < the variant's defaults < a preset < a config file
< command-line options (`--set KEY=VALUE`, `--steps`, ...). The effective config is written to
the run directory and into every checkpoint, so `sample`, `evaluate` and `serve` rebuild the
model from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganforge.errors import GanforgeError


def _f(default: Any, help: str, **check: Any) -> Any:
    return field(default=default, metadata={"help": help, **check})


@dataclass
class TrainConfig:
    # what to train
    variant: str = _f("dcgan", "GAN variant (see `ganforge train --help` for the list)")
    recipe: str = _f("", "the recipe `ganforge train` chose from the data when no variant or "
                     "preset was given, and why (a record; empty when the user chose)",
                     optional=True)
    data: str = _f("fashion-mnist", "prepared data dir, image folder, idx file or `fashion-mnist`")
    data_b: str = _f("", "CycleGAN: the second (B) domain's images; empty for other variants",
                     optional=True)
    size: int = _f(0, "image size in pixels (0 = the data's own size)", min=0, max=1024)
    channels: int = _f(0, "1 or 3 (0 = the data's own)", choices=(0, 1, 3))
    crop: float = _f(1.0, "center-crop fraction used when preparing a folder", min=0.05, max=1.0)
    mirror: bool = _f(False, "add every image's horizontal mirror image to the data (twice the "
                      "images; for faces, sprites, products - not for text)")
    # networks
    z_dim: int = _f(100, "latent dimension", min=1, max=4096)
    g_width: int = _f(64, "generator width (channels of its last hidden layer)", min=1, max=4096)
    d_width: int = _f(64, "discriminator width (channels of its first layer)", min=1, max=4096)
    max_width: int = _f(512, "cap on the channels of any conv layer", min=1, max=8192)
    g_convs: int = _f(0, "DCGAN-family G: extra 3x3 convolutions at each hidden resolution "
                      "(0 = the DCGAN paper's)", min=0, max=8)
    d_convs: int = _f(0, "DCGAN-family D: extra 3x3 convolutions at each resolution (0 = the "
                      "DCGAN paper's; 1 = SNGAN's standard-CNN critic layout)", min=0, max=8)
    d_first_norm: bool = _f(False, "DCGAN-family D: the d_convs 3x3 convolutions at its first "
                            "resolution get d_norm too, as runs saved without this key did "
                            "(without it the fast preset scored lower FIDs in 3 of 3 "
                            "10-minute runs; no effect with d_convs 0 or d_norm none or "
                            "spectral). dcgan, wgan, wgan-gp and sngan read it; cgan's "
                            "projection D always normalises them, whatever its config says")
    g_upsample: str = _f("transposed", "DCGAN-family G: how each layer doubles the resolution: "
                         "`transposed` (4x4 stride-2 transposed conv, the DCGAN paper's) or "
                         "`nearest` (nearest-neighbour upsampling, then a 3x3 conv)",
                         choices=("transposed", "nearest"))
    g_selfmod: bool = _f(False, "DCGAN-family G: self-modulated BatchNorm (Chen et al. 2019): "
                         "each BatchNorm's scale and shift computed from the sample's z by a "
                         "small MLP (32 hidden units), so every layer sees z")
    d_mbstd: int = _f(0, "DCGAN-family D: group size of a minibatch-standard-deviation channel "
                      "before D's logit (ProGAN; 0 = off, 4 = ProGAN's)", min=0, max=64)
    d_norm: str = _f(
        "batch", "critic normalisation", choices=("batch", "instance", "layer", "none", "spectral")
    )
    dropout: float = _f(0.3, "dropout in the MLP networks", min=0.0, max=0.95)
    embed_dim: int = _f(0, "conditional G: label embedding size joined to z (0 = z_dim)",
                        min=0, max=4096)
    cond_norm: bool = _f(True, "cgan: the condition also sets the scale and shift of every "
                         "BatchNorm in G (conditional BatchNorm); off = it is only joined to z")
    mode_seeking: float = _f(0.0, "cgan: weight λ of the mode-seeking term λ / (mean |G(z1,c) - "
                             "G(z2,c)| / mean |z1 - z2|) in G's loss (Mao et al. 2019), which "
                             "keeps G from ignoring z (0 = off)", min=0.0)
    condition: str = _f("label", "cgan: `label` (a learned embedding per class) or `text` "
                        "(frozen sentence embeddings of captions; needs ganforge[text])",
                        choices=("label", "text"))
    text_model: str = _f("all-MiniLM-L6-v2", "cgan with condition=text: the sentence-embedding "
                         "model (only its name is kept in checkpoints)")
    captions: str = _f("", "cgan with condition=text: a captions file (JSON or `class: phrase` "
                       "lines; default: captions.json/.txt in the labelled folder, built in for "
                       "fashion-mnist)", optional=True)
    res_blocks: int = _f(6, "CycleGAN generator: residual blocks at the bottleneck", min=1,
                         max=64)
    # objective and schedule
    loss: str = _f("bce", "adversarial loss",
                   choices=("bce", "wasserstein", "hinge", "lsgan"))
    real_label: float = _f(1.0, "BCE target for real images (0.9 = one-sided smoothing)",
                           min=0.5, max=1.0)
    gp_weight: float = _f(0.0, "gradient-penalty weight λ (WGAN-GP uses 10)", min=0.0)
    clip_value: float = _f(0.0, "clamp critic weights to [-c, c] after each step (0 = off)",
                           min=0.0)
    l1_weight: float = _f(100.0, "pix2pix: weight λ of the L1 loss to the true target",
                          min=0.0)
    cycle_weight: float = _f(10.0, "CycleGAN: weight λ of the cycle-consistency L1 loss",
                             min=0.0)
    identity_weight: float = _f(0.0, "CycleGAN: weight of the identity L1 loss "
                                "(‖G(b) − b‖₁; the paper uses 0.5·λ_cyc, 0 = off)", min=0.0)
    pool_size: int = _f(50, "CycleGAN: generated images kept in each discriminator's history "
                        "pool (0 = off)", min=0, max=10000)
    r1_gamma: float = _f(0.0, "R1 penalty weight γ: D's loss gains γ/2 · mean ||∇D(x)||² at "
                         "the real images (Mescheder et al. 2018; a D with several outputs per "
                         "image, PatchGAN-style, is penalised on their mean; 0 = off); needs a "
                         "D without BatchNorm and d_mbstd=0", min=0.0)
    r1_every: int = _f(16, "R1 is applied every this many D steps with its weight times that "
                       "many (lazy regularisation, StyleGAN2; 1 = every step)", min=1, max=10000)
    n_critic: int = _f(1, "discriminator steps per generator step", min=1, max=100)
    schedule: str = _f(
        "alternate",
        "`alternate`: n_critic D steps then one G step; `adaptive`: train whichever side is "
        "losing on the current minibatch (D for `adaptive_d_steps` steps, else G)",
        choices=("alternate", "adaptive"),
    )
    adaptive_d_steps: int = _f(5, "D steps taken when the adaptive schedule picks D", min=1)
    # optimisation
    optimizer: str = _f("adam", "optimiser for both networks", choices=("adam", "rmsprop"))
    lr_g: float = _f(2e-4, "generator learning rate", min=0.0, max=1.0)
    lr_d: float = _f(2e-4, "discriminator learning rate", min=0.0, max=1.0)
    beta1: float = _f(0.5, "Adam beta1", min=0.0, max=1.0)
    beta2: float = _f(0.999, "Adam beta2", min=0.0, max=1.0)
    lr_decay: float = _f(0.0, "decay both learning rates linearly to 0 over this final "
                         "fraction of the steps (CycleGAN: 0.5)", min=0.0, max=1.0)
    batch_size: int = _f(64, "real images per D step", min=1, max=65536)
    ema: float = _f(0.0, "EMA decay of the generator weights (0 = off, e.g. 0.999); ramped up "
                    "as min(ema, (1+t)/(10+t)) at G step t, and the averaged G gets BatchNorm "
                    "statistics of its own before every grid, evaluation and checkpoint",
                    min=0.0, max=1.0)
    # small data: differentiable augmentation (ganforge.augment)
    augment: str = _f("", "differentiable augmentation of every image D sees, real and fake, "
                      "in the D and the G step: a comma list of color, translation, cutout "
                      "(empty = off)", optional=True)
    augment_p: str = _f("1", "probability that each augmentation is applied to an image: a "
                        "number in [0, 1] (1 = DiffAugment), or `auto`: adjusted during "
                        "training from D's overfitting signal r_t = E[sign(D(real))] (ADA)",
                        numeric=True)
    augment_target: float = _f(0.6, "augment_p=auto: the r_t to hold; p rises while r_t is "
                               "above it", min=0.0, max=1.0)
    augment_kimg: float = _f(100.0, "augment_p=auto: thousands of real images over which p can "
                             "move from 0 to 1", min=0.1)
    # run length and reporting
    steps: int = _f(1000, "generator steps in total", min=1)
    minutes: float = _f(0.0, "stop after this many minutes of training (0 = no limit)", min=0.0)
    log_every: int = _f(50, "generator steps between metric log lines", min=1)
    sample_every: int = _f(500, "generator steps between sample grids and checkpoints", min=1)
    grid_size: int = _f(64, "images in the fixed-latent sample grid", min=1, max=1024)
    eval_every: int = _f(1000, "generator steps between quick FID/KID evaluations (0 = at "
                         "every sample interval); a run that has passed one also gets one "
                         "at its end", min=0)
    eval_n: int = _f(250, "generated images per quick FID/KID evaluation against the training "
                     "data (0 = off); checkpoints/best.safetensors is the best by it "
                     "(the latest within 3 % of the lowest)", min=0)
    seed: int = _f(0, "random seed (data order, latents, initial weights)", min=0,
                   max=2**62)
    device: str = _f("auto", "`auto`, `cpu`, `cuda` or `cuda:N`")
    amp: str = _f("off", "mixed precision: `off`, `bf16`, `fp16` (with loss scaling; for "
                  "GPUs without bf16: on a CPU it runs, slowly, for tests) or `auto` (bf16 "
                  "on GPUs of compute capability 8+; on CPUs with AVX-512 BF16 or AMX, bf16 "
                  "if a few timed training steps of the model run at least 1.05x faster in "
                  "it, measured and printed before every session (a resume too) trains, with "
                  "compile=true the flags alone decide; else off)",
                  choices=("off", "bf16", "fp16", "auto"))
    threads: int = _f(0, "CPU threads for torch (0 = torch's default)", min=0, max=1024)
    channels_last: bool = _f(False, "keep conv activations in channels-last memory layout "
                             "(faster convolutions on CPUs with oneDNN and on GPUs)")
    compile: bool = _f(False, "torch.compile G and D (fewer kernel launches for small models "
                       "on a GPU; the first steps compile, for a minute or more; D is left "
                       "uncompiled with a gradient penalty or R1, whose double backward "
                       "compiled graphs do not support)")
    sync_bn: bool = _f(False, "several GPUs: BatchNorm statistics over the global batch "
                       "(SyncBatchNorm) instead of each process's slice; needs CUDA")
    overlap_grads: bool = _f(True, "several processes: all-reduce gradients in buckets while "
                             "backward runs (as DistributedDataParallel does) instead of in "
                             "one piece after it; the same averages either way")
    reuse_fakes: bool = _f(True, "with one D step per G step, the G step scores the D step's "
                           "fakes instead of generating new ones (one G forward per step)")
    tensorboard: bool = _f(True, "also write TensorBoard event files (when the optional "
                           "tensorboard package is installed)")
    # health monitor
    health: bool = _f(True, "watch for NaN/Inf, an exploding critic, a winning D, mode collapse")
    on_problem: str = _f("rollback", "`rollback` to the last good checkpoint with a lower "
                         "learning rate, or `stop` with a message", choices=("rollback", "stop"))
    max_rollbacks: int = _f(3, "give up (stop) after this many rollbacks", min=0)
    rollback_lr_factor: float = _f(0.5, "multiply both learning rates by this on a rollback",
                                   min=0.01, max=1.0)
    explode_threshold: float = _f(1e5, "|mean D output| or D gradient norm counted as exploding",
                                  min=1.0)
    stuck_steps: int = _f(2000, "steps of D right on >99% of real and fake before reporting",
                          min=1)
    collapse_ratio: float = _f(0.1, "sample diversity below this fraction of the real images' "
                               "is mode collapse (0 = off)", min=0.0, max=1.0)
    # small-data variant (FastGAN-style)
    recon_weight: float = _f(1.0, "small-data: weight of D's reconstruction loss (L1 between "
                             "its decoders' output and the real images it saw; 0 = off)",
                             min=0.0)
    d_input_norm: bool = _f(False, "small-data: D normalises the features of its first block "
                            "too, as runs saved without this key did (with BatchNorm there D "
                            "barely sees a change of brightness or contrast that a whole batch "
                            "shares, and G drifts to washed-out grey images; no effect with "
                            "d_norm none or spectral)")

    def validate(self) -> TrainConfig:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if isinstance(value, float) and not math.isfinite(value):
                raise GanforgeError(f"config key '{f.name}' must be a finite number, got {value}")
            if "choices" in meta and value not in meta["choices"]:
                opts = ", ".join(repr(c) for c in meta["choices"])
                raise GanforgeError(f"config key '{f.name}' must be one of {opts}, got {value!r}")
            if "min" in meta and value < meta["min"]:
                raise GanforgeError(f"config key '{f.name}' must be >= {meta['min']}, got {value}")
            top = meta.get("max", INT_MAX if isinstance(value, int) else None)
            if top is not None and value > top:
                raise GanforgeError(f"config key '{f.name}' must be <= {top}, got {_short(value)}")
            if isinstance(value, str) and not value.strip() and not meta.get("optional"):
                raise GanforgeError(f"config key '{f.name}' must not be empty")
        from ganforge.augment import parse_p, parse_policy  # torch is loaded by now anyway

        parse_policy(self.augment)
        parse_p(self.augment_p)
        if self.size and not 8 <= self.size <= 1024:
            raise GanforgeError(f"config key 'size' must be between 8 and 1024, got {self.size}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# `steps` when --minutes alone sets the length of a run: the clock stops it first.
UNTIL_CLOCK = 1_000_000_000

# Any int key without its own `max`: beyond this a value is a mistake, and torch's RNGs and
# the explorer's JSON (float64 in a browser) could not hold it.
INT_MAX = 2**53


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _field_type(name: str) -> type:
    hint = typing.get_type_hints(TrainConfig)[name]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _short(value: Any) -> str:
    """repr() for an error message, cut to a readable length."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def coerce(name: str, value: Any, *, typed: bool = False) -> Any:
    """Check `name` is a config key and turn `value` (a string from the CLI, or a JSON/TOML
    value) into its type. `typed`: the value comes from a typed file, where a string is only
    accepted for string keys. Raises one GanforgeError naming the key on any problem."""
    if not isinstance(name, str) or name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise GanforgeError(f"unknown config key {_short(name)}{hint}")
    kind = _field_type(name)
    try:
        if typed and isinstance(value, str) and kind is not str:
            raise ValueError
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                return value.lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if FIELDS[name].metadata.get("numeric") and isinstance(value, int | float) \
                    and not isinstance(value, bool):
                return repr(value)  # a str key that also takes a number (augment_p)
            if not isinstance(value, str):
                raise ValueError
            return value
    except (ValueError, TypeError, OverflowError):
        pass
    raise GanforgeError(
        f"config key '{name}' expects {'an' if kind is int else 'a'} {kind.__name__}, "
        f"got {_short(value)}"
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse `KEY=VALUE` strings from `--set`."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise GanforgeError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        out[key] = coerce(key, value.strip())
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into checked overrides."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is fine
    except FileNotFoundError:
        raise GanforgeError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GanforgeError(f"cannot read config file {path}: {e}") from None
    toml = path.suffix.lower() == ".toml"
    try:
        raw = tomllib.loads(text) if toml else json.loads(text)
    except (ValueError, RecursionError) as e:  # decode errors, 5000-digit numbers, deep nesting
        kind = "TOML" if toml else "JSON"
        raise GanforgeError(f"config file {path} is not valid {kind}: "
                            f"{str(e) or type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise GanforgeError(f"config file {path} must hold a table/object of KEY: VALUE "
                            f"(found {type(raw).__name__})")
    return {k: coerce(k, v, typed=True) for k, v in raw.items()}


# Presets: a variant plus tuned overrides. `ganforge train --preset NAME`.
PRESETS: dict[str, dict[str, Any]] = {
    # Fashion-MNIST-sized data on a laptop/CI CPU, tuned for FID per minute of training
    # (bench/bench_quality.py; the steps behind the choices are in docs/BENCHMARKS.md): a G
    # twice as wide as D, a 3x3 conv beside each of D's stride-2 ones, Adam at 10x the DCGAN
    # learning rate with an EMA of G (the EMA averages out the noise that rate brings), bf16
    # where it is faster on this CPU (measured when the run starts, ganforge.amp_probe),
    # channels-last tensors (the training step ran 1.04-1.14x faster in that layout on the
    # three CPUs measured: docs/BENCHMARKS.md, "Tuning the `fast` preset, round 6"), and a
    # 16-dim latent (round 10, at 28 px: 10-minute runs of the command without flags scored
    # fid5k_test 17.48 and 16.25 with seeds 0 and 1, against 19.44 and 19.74 with 32 dims and
    # 22.26 and 22.27 with DCGAN's 100; 8 dims scored 16.14 and 18.18, round 11). The recipe
    # for larger or colour images sets DCGAN's 100 back (ganforge.recipes.measured_latent).
    # D's 3x3 conv at its first resolution has no norm (`d_first_norm`'s default; round 12, on
    # a CPU with AVX-512: 12.63 and 13.83 against 14.89 and 14.42 with BatchNorm there).
    # G's BatchNorms are self-modulated by z (`g_selfmod`, round 15: 11.99, 11.26 and 11.63
    # with seeds 0-2 against 12.63, 13.83 and 12.91, at about the same steps).
    "fast": dict(variant="dcgan", z_dim=16, g_width=64, d_width=32, d_convs=1, g_selfmod=True,
                 batch_size=64, lr_g=2e-3, lr_d=2e-3, ema=0.999, amp="auto", channels_last=True,
                 steps=1_000_000, log_every=25, sample_every=250),
    # The same recipe sized for a GPU: wider nets, larger batches, channels-last bf16.
    # Not yet tuned on a GPU (none was available when it was written).
    "gpu": dict(variant="dcgan", g_width=128, d_width=64, batch_size=256, lr_g=2e-3,
                lr_d=2e-3, ema=0.999, amp="auto", channels_last=True, steps=1_000_000,
                log_every=50, sample_every=1000, eval_n=2000, eval_every=2000),
    "mlp": dict(variant="mlp"),
    "dcgan": dict(variant="dcgan"),
    "wgan": dict(variant="wgan"),
    "wgan-gp": dict(variant="wgan-gp"),
    "sngan": dict(variant="sngan"),
    "cgan": dict(variant="cgan"),
    "pix2pix": dict(variant="pix2pix", data="fashion-mnist-edges"),
    "cyclegan": dict(variant="cyclegan"),
}


def build_config(layers: list[dict[str, Any]]) -> TrainConfig:
    """Combine override layers (later wins) on top of the variant's defaults."""
    from ganforge.variants import get_variant

    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    variant = get_variant(merged.get("variant", TrainConfig.variant))
    values = {**variant.defaults, **merged, "variant": variant.name}
    return TrainConfig(**values).validate()


# Keys added after runs were saved without them, whose absence means the behaviour of the
# release that saved the run (not today's default): {key: (variants, value then)}.
LEGACY: dict[str, tuple[tuple[str, ...], Any]] = {
    "cond_norm": (("cgan",), False),  # z and label were only joined
    "d_input_norm": (("small-data",), True),  # D's first block had BatchNorm
    "d_first_norm": (("dcgan", "wgan", "wgan-gp", "sngan"), True),  # so had the d_convs there
}


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved in a run or checkpoint (unknown keys are an error); a key it
    lacks that was added since (LEGACY) takes the value the release that saved it used."""
    d = {**{k: v for k, (variants, v) in LEGACY.items() if d.get("variant") in variants}, **d}
    return TrainConfig(**{k: coerce(k, v) for k, v in d.items()}).validate()


def describe_options() -> str:
    """Help text listing every config key, its type, default and meaning."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  {f.name} ({_field_type(f.name).__name__}, default {f.default!r}): "
                     f"{f.metadata['help']}")
    return "\n".join(lines)
