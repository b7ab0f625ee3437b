"""Checkpoints: one safetensors file holding tensors only, plus a JSON header with plain values.

Loading never unpickles anything, so a checkpoint someone hands you cannot run code. Every
tensor is covered by a SHA-256 content hash stored in the header, and the header's own values
(step, config, schedule state) by a second one; both are verified on load. Files are written
atomically (temp file + rename), so a kill at any moment leaves the previous checkpoint intact.

Layout of the tensor names:  G.<param>  D.<param>  G_ema.<param>  opt_G.<idx>.<state>
opt_D.<idx>.<state>  rng.<stream>  z_fixed.  The header (`__metadata__["ganforge"]`) holds
{format, config, step, state, optimizers' param groups, content_sha256, header_sha256}.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ganforge import io
from ganforge.errors import GanforgeError

FORMAT = "ganforge-checkpoint-1"


@dataclass
class Checkpoint:
    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def module_state(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def load_module(self, module: nn.Module, prefix: str) -> None:
        state = self.module_state(prefix)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise GanforgeError(f"{self.path}: network {prefix!r} does not match this model "
                                f"({first}); was it written by another variant or size?") from None

    def load_optimizer(self, opt: torch.optim.Optimizer, prefix: str) -> None:
        info = self.meta["optimizers"][prefix]
        state: dict[int, dict[str, Any]] = {}
        for k, v in self.tensors.items():
            if k.startswith(prefix + "."):
                idx, name = k[len(prefix) + 1:].split(".", 1)
                state.setdefault(int(idx), {})[name] = v
        for idx, values in info["plain_state"].items():
            state.setdefault(int(idx), {}).update(values)
        try:
            opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        except (ValueError, KeyError) as e:
            raise GanforgeError(f"{self.path}: optimiser {prefix!r} does not match ({e})") from None
        _match_param_layout(opt)


def _match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Checkpoints store tensors contiguous and `load_state_dict` keeps that layout, but a
    channels-last parameter's moments must be channels-last too: the fused Adam kernels walk
    parameter, gradient and moments as flat memory, so mismatched strides pair the wrong
    elements (silently on the CPU, a refused step on CUDA)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _header_digest(meta: dict[str, Any]) -> str:
    plain = {k: v for k, v in meta.items() if k not in ("content_sha256", "header_sha256")}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def save_checkpoint(path: str | Path, *, config: dict[str, Any], step: int,
                    modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write a checkpoint atomically. `tensors` are extra tensors (RNG states, fixed latents),
    `state` is plain JSON-able values (schedule counters, best FID, data identity)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            out[f"{name}.{k}"] = _cpu(v)
    opt_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        plain: dict[str, dict[str, Any]] = {}
        for idx, values in sd["state"].items():
            for k, v in values.items():
                if torch.is_tensor(v):
                    out[f"{name}.{idx}.{k}"] = _cpu(v)
                else:
                    plain.setdefault(str(idx), {})[k] = v
        opt_meta[name] = {"param_groups": sd["param_groups"], "plain_state": plain}
    for k, v in tensors.items():
        out[k] = _cpu(v)
    meta = {"format": FORMAT, "config": config, "step": int(step), "state": state,
            "optimizers": opt_meta}
    meta = json.loads(json.dumps(meta, default=io._json_default))  # the values a reader sees
    meta.update(content_sha256=_digest(out), header_sha256=_header_digest(meta))
    payload = st_save(out, metadata={"ganforge": json.dumps(meta)})
    io.write_bytes(path, payload)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; any problem is one GanforgeError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise GanforgeError(f"{path} is a directory, not a checkpoint file")
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise GanforgeError(f"{path} is not a regular file, not a checkpoint")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GanforgeError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise GanforgeError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    meta = _read_header(path, raw)
    try:
        tensors = st_load(raw)
        digest = _digest(tensors)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise GanforgeError(f"{path} is damaged or truncated ({e})") from None
    if digest != meta.get("content_sha256"):
        raise GanforgeError(f"{path} failed its content check: the file was modified or "
                            "damaged after it was written")
    return Checkpoint(path=path, tensors=tensors, meta=meta)


def _read_header(path: Path, raw: bytes) -> dict[str, Any]:
    bad = f"{path} is not a ganforge checkpoint"
    if len(raw) < 8:
        raise GanforgeError(f"{bad} (file is {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8 or n > 100_000_000:
        raise GanforgeError(f"{bad} or it is truncated (header length {n} exceeds the file)")
    try:
        header = json.loads(raw[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["ganforge"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise GanforgeError(f"{bad} (no ganforge header)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise GanforgeError(f"{bad} (unknown format {found!r})")
    shape = {"config": dict, "step": int, "state": dict, "optimizers": dict,
             "content_sha256": str}
    wrong = [k for k, kind in shape.items() if not isinstance(meta.get(k), kind)]
    if wrong or meta["step"] < 0:
        raise GanforgeError(f"{bad} (header field {(wrong or ['step'])[0]!r} is missing or "
                            "invalid)")
    # a header without its hash is refused too: dropping it must not make an edit pass
    if meta.get("header_sha256") != _header_digest(meta):
        raise GanforgeError(f"{path} failed its header check: the file was modified or "
                            "damaged after it was written")
    return meta


def resolve(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file, or a run directory -> its best (else latest) checkpoint."""
    path = Path(path)
    if path.is_dir():
        order = ["best", "latest"] if prefer == "best" else ["latest", "best"]
        for name in order:
            candidate = path / "checkpoints" / f"{name}.safetensors"
            if candidate.exists():
                return candidate
        raise GanforgeError(f"{path} holds no checkpoint (expected {path}/checkpoints/"
                            "latest.safetensors); is it a ganforge run directory?")
    if not path.exists():
        raise GanforgeError(f"checkpoint or run directory not found: {path}")
    return path
