"""TensorBoard event files beside metrics.jsonl, for people who live in TensorBoard.

Written only when the optional `tensorboard` package is installed (`pip install
ganforge[tensorboard]`) and `tensorboard=true` (the default): the same scalars as the JSONL
log (tagged train/..., eval/...) and the fixed-latent sample grids, under RUN/tensorboard.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np


class TensorBoardLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra is not installed: JSONL and PNG only
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def record(self, rec: dict[str, Any]) -> None:
        if self.writer is None or "step" not in rec:
            return
        kind = rec.get("kind", "train")
        for key, value in rec.items():
            if key in ("step", "kind") or isinstance(value, bool) \
                    or not isinstance(value, numbers.Real):
                continue
            self.writer.add_scalar(f"{kind}/{key}", float(value), rec["step"])
        self.writer.flush()

    def grid(self, step: int, image: np.ndarray) -> None:
        """A uint8 [H, W, C] sample grid."""
        if self.writer is not None:
            self.writer.add_image("samples", image, step, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
