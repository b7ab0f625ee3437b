"""Streaming Inception feature extraction.

:class:`FeatureExtractor` turns uint8 images ``[N, H, W, C]`` — an array, an iterable of batches,
or a ``generate(n_batch)`` callable — into float32 pool3 features ``[N, 2048]``, one batch at a
time: memory holds the network, one batch and the output features, whatever N is.

Speed on CPU comes from: batch norm folded into the convs, channels_last tensors (oneDNN's fast
path), ``torch.inference_mode``, the resize done as two small matmuls, and glibc's malloc told to
keep large buffers (:func:`tune_malloc`) instead of returning them to the OS and faulting them
back in on every batch. See docs/BENCHMARKS.md for the measured effect of each.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ganforge.devices import float32_math
from ganforge.errors import GanforgeError
from ganforge.metrics.inception import FEATURE_DIM, InceptionV3, load_inception, preprocess
from ganforge.metrics.weights import load_classifier_head

# bfloat16 moved FID by -0.44..-0.49 % (fp32 stem) or -1.1 % (all bf16) on 1k-2k real images:
# not safely within the 0.5 % tolerance, so float32 stays the default (docs/BENCHMARKS.md).
# "float32" is IEEE float32 on GPUs too (cuDNN would use TF32 for convolutions by default on
# Ampere and later); "tf32" allows TF32 there (a named protocol of its own; on CPUs the same as
# float32).
DEFAULT_DTYPE = "float32"
DTYPES = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_BATCH_SIZE = 50
# Images per forward pass of the network, fixed per device type (see FeatureExtractor._forward):
# 25 on CPUs (oneDNN), 200 on GPUs (a GPU needs large batches to be busy).
NET_BATCH = 25
GPU_NET_BATCH = 200

Images = np.ndarray | torch.Tensor | Iterable | Callable[[int], np.ndarray]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_malloc_tuned = False


def tune_malloc() -> bool:
    """Keep freed large buffers inside the process (glibc only; idempotent).

    glibc serves each large allocation (every conv activation) with a fresh mmap and unmaps it on
    free, so every batch page-faults its whole working set again. ``mallopt(M_MMAP_MAX, 0)`` plus
    a high ``M_TRIM_THRESHOLD`` — the same as the env vars ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=...`` but effective in a running process — makes the loop about 1.6x
    faster here. Cost: the process keeps its peak heap until exit. Set ``GANFORGE_MALLOC_TUNING=0``
    to skip. Returns whether the settings were applied.
    """
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("GANFORGE_MALLOC_TUNING", "1") == "0":
        return _malloc_tuned
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    _malloc_tuned = ok
    return ok


@functools.lru_cache(maxsize=4)
def _network(device: str, precision: str) -> InceptionV3:
    net = load_inception(fold=True).to(device=device, memory_format=torch.channels_last)
    return net.use_bfloat16() if precision == "bfloat16" else net  # tf32: float32 weights


@dataclass
class Features:
    """Output of :meth:`FeatureExtractor.extract`."""

    features: np.ndarray  # [N, 2048] float32
    logits: np.ndarray | None = None  # [N, 1008] float32 (unbiased), only with a classifier


def iter_batches(images: Images, batch_size: int, n: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 batches of at most ``batch_size`` images from any accepted input form.

    A callable is called as ``generate(k)`` until ``n`` images were produced (``n`` required).
    An iterable may yield batches of any size; larger ones are split. ``n`` caps the total.
    """
    if callable(images) and not isinstance(images, np.ndarray | torch.Tensor):
        if n is None:
            raise GanforgeError("a generate(n_batch) callable needs the number of images n")
        done = 0
        while done < n:
            k = min(batch_size, n - done)
            batch = images(k)
            if len(batch) != k:
                raise GanforgeError(f"generate({k}) returned {len(batch)} images")
            done += k
            yield batch
        return
    source: Iterable = [images] if isinstance(images, np.ndarray | torch.Tensor) else images
    done = 0
    for batch in source:
        for i in range(0, len(batch), batch_size):
            part = batch[i:i + batch_size]
            if n is not None:
                part = part[: n - done]
            if len(part):
                done += len(part)
                yield part
            if n is not None and done >= n:
                return


class FeatureExtractor:
    """Inception pool3 features of uint8 images, streamed in batches.

    Args:
        device: torch device string.
        dtype: "float32" (default, reproduces the reference FID; IEEE float32 on GPUs too),
            "tf32" (GPUs: TF32 convolutions and matmuls) or "bfloat16" (stem in float32, the
            rest in bfloat16: ~1.6x faster on CPUs with AVX-512 BF16, but FID about 0.46 %
            lower; see docs/BENCHMARKS.md).
        batch_size: images read per batch (on a GPU at least GPU_NET_BATCH); results do not
            depend on it.
        progress: show a tqdm progress bar.
        classifier: path to a local file with the TF-Inception 1008-way classifier (see
            :func:`ganforge.metrics.weights.load_classifier_head`), or None (default: the
            ``GANFORGE_INCEPTION_CLASSIFIER`` env var). Without it no logits are produced.
    """

    def __init__(
        self,
        device: str = "cpu",
        dtype: str = DEFAULT_DTYPE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = True,
        classifier: str | os.PathLike | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise GanforgeError(f"unknown precision {dtype!r}; choose one of {sorted(DTYPES)}")
        if batch_size < 1:
            raise GanforgeError(f"batch_size must be >= 1, got {batch_size}")
        self.device = str(torch.device(device))
        self.dtype = dtype
        on_cpu = torch.device(device).type == "cpu"
        self.net_batch = NET_BATCH if on_cpu else GPU_NET_BATCH
        self.batch_size = batch_size if on_cpu else max(batch_size, GPU_NET_BATCH)
        self.progress = progress
        # FID/KID statistics in float64 on this device (None: numpy on the CPU)
        self.stats_device = None if on_cpu else self.device
        if on_cpu:
            tune_malloc()
        self.net = _network(self.device, "bfloat16" if dtype == "bfloat16" else "float32")
        path = classifier or os.environ.get("GANFORGE_INCEPTION_CLASSIFIER") or None
        self.classifier = load_classifier_head(path) if path else None  # [1008, 2048]

    @property
    def has_logits(self) -> bool:
        return self.classifier is not None

    def _forward(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        # The network always sees net_batch images (the last chunk zero-padded): convolution
        # kernels pick their algorithm by batch shape, so this keeps every image's features
        # bit-identical whatever batch_size or chunking the caller uses. On a GPU the uint8
        # images go to the device first: the resize to 299x299 and the scaling run there.
        out = []
        step = self.net_batch
        with float32_math(tf32=self.dtype == "tf32"):
            for i in range(0, len(batch), step):
                part = self._to_device(batch[i:i + step])  # uint8 [n, H, W, C]
                n = len(part)
                if n < step:
                    pad = (step - n, *part.shape[1:])
                    part = torch.cat([part, part.new_zeros(pad)]) \
                        if isinstance(part, torch.Tensor) \
                        else np.concatenate([part, np.zeros(pad, part.dtype)])
                x = preprocess(part).to(self.device)  # [net_batch, 3, 299, 299] float32
                out.append(self.net(x).float().cpu()[:n])  # [n, 2048]
        return torch.cat(out)

    def _to_device(self, part: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """A uint8 batch on the network's device (CPU: as it is; a wrong dtype is left for
        preprocess to name)."""
        if self.stats_device is None:
            return part
        if isinstance(part, np.ndarray):
            if part.dtype != np.uint8:
                return part
            part = torch.from_numpy(np.ascontiguousarray(part) if part.flags.writeable
                                    else part.copy())
        return part.to(self.device) if isinstance(part, torch.Tensor) else part

    def extract(self, images: Images, n: int | None = None, desc: str = "features") -> Features:
        """Features (and logits when a classifier is loaded) of ``images``.

        ``images``: uint8 ``[N, H, W, C]`` array/tensor, an iterable of such batches, or a
        callable ``generate(k) -> [k, H, W, C]`` (then ``n`` is required). ``n`` caps the count.
        """
        total = len(images) if isinstance(images, np.ndarray | torch.Tensor) else None
        if n is not None:
            total = n if total is None else min(n, total)
        # With a known count the output is allocated once, so memory is the features plus one
        # batch; an iterable of unknown length keeps per-batch chunks and joins them at the end.
        out = np.empty((total, FEATURE_DIM), np.float32) if total else None
        chunks: list[np.ndarray] = []
        logit_chunks: list[np.ndarray] = []
        done = 0
        try:
            with torch.inference_mode(), tqdm(total=total, desc=desc, unit="img",
                                               disable=not self.progress, leave=False) as bar:
                for batch in iter_batches(images, self.batch_size, n):
                    f = self._forward(batch)  # [B, 2048] float32
                    if out is not None:
                        out[done:done + len(f)] = f.numpy()
                    else:
                        chunks.append(f.numpy())
                    if self.classifier is not None:
                        logit_chunks.append((f @ self.classifier.T).numpy())
                    done += len(f)
                    bar.update(len(f))
        except ValueError as e:  # bad image array: dtype / shape
            raise GanforgeError(str(e)) from e
        if done == 0:
            raise GanforgeError("no images to extract features from")
        feats = out[:done] if out is not None else np.concatenate(chunks)
        logits = np.concatenate(logit_chunks) if logit_chunks else None
        return Features(feats, logits)
