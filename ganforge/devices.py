"""Which device to run on, what it computes natively, and float32 that really is float32.

Shared by every command that takes `--device` (train, sample, interpolate, translate, evaluate,
serve): `auto` is a CUDA GPU where there is one, else the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ganforge.errors import GanforgeError


def pick_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a device that exists here (else one clear error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GanforgeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise GanforgeError(f"device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GanforgeError(f"device {name!r} was asked for but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GanforgeError(f"device {name!r} does not exist: this process sees "
                                f"{torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def native_bf16(device: torch.device) -> str:
    """`bf16` where the device multiplies bfloat16 natively (CUDA compute capability 8+, CPUs
    with AVX-512 BF16 or AMX), else `off`: emulated bfloat16 is slower than float32.

    On CUDA this asks the chosen device for its compute capability:
    `torch.cuda.is_bf16_supported()` answers for the current device and is also true where
    bfloat16 is only emulated (V100, T4)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return "bf16" if torch.cuda.get_device_capability(index) >= (8, 0) else "off"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return "off"
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "off"


def _tf32_props() -> list[tuple[object, str, object]]:
    """(object, attribute, value for true float32) of the switches that let CUDA run float32
    convolutions and matmuls in TF32 (the newer `fp32_precision` API where this torch has
    it: mixing it with the older `allow_tf32` flags is an error in torch >= 2.9)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"),
                (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False),
            (torch.backends.cuda.matmul, "allow_tf32", False)]


@contextmanager
def float32_math(tf32: bool = False) -> Iterator[None]:
    """Inside: float32 convolutions and matmuls on CUDA are IEEE float32 (`tf32=False`; cuDNN
    otherwise uses TF32 for convolutions by default on Ampere and later) or TF32 (`tf32=True`).
    The previous settings come back on exit. No effect on CPUs."""
    props = _tf32_props()
    saved = [getattr(obj, name) for obj, name, _ in props]
    try:
        for obj, name, ieee in props:
            if isinstance(ieee, bool):
                setattr(obj, name, tf32)
            else:
                setattr(obj, name, "tf32" if tf32 else ieee)
        yield
    finally:
        for (obj, name, _), value in zip(props, saved, strict=True):
            setattr(obj, name, value)
