"""A small CNN classifier for scoring class-conditional generators.

It is trained once on the real labelled images of a dataset and cached per dataset content
hash (written atomically: a kill leaves no half file), then labels generated images: the share
a generator's class-k images that it calls class k is the classifier accuracy on generated
images, read beside its accuracy on real held-out images (the ceiling).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from tqdm import tqdm

from ganforge import io
from ganforge.data import cache_root

VERSION = 1


class SmallCNN(nn.Module):
    """uint8-derived images [N, C, H, W] in [-1, 1] -> class logits [N, n_classes]."""

    def __init__(self, channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, 128), nn.ReLU(True), nn.Dropout(0.3),
            nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1.0


def train_classifier(images: np.ndarray, labels: np.ndarray, n_classes: int, *,
                     epochs: int = 2, batch_size: int = 128, seed: int = 0,
                     progress: bool = True) -> SmallCNN:
    """Train on uint8 images [N, H, W, C] with int labels [N] (Adam 1e-3, light shifts)."""
    torch.manual_seed(seed)
    model = SmallCNN(images.shape[3], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(images)
    steps = epochs * max(1, n // batch_size)
    model.train()
    for step in tqdm(range(steps), desc="classifier", disable=not progress):
        if step % max(1, n // batch_size) == 0:
            perm = torch.randperm(n, generator=gen)
        idx = perm[(step % max(1, n // batch_size)) * batch_size:][:batch_size].sort().values
        x, y = _to_input(images[idx.numpy()]), y_all[idx]
        dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()  # translation jitter
        x = torch.roll(x, (dx, dy), dims=(2, 3))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Class logits [N, n_classes] (float32) of uint8 images [N, H, W, C]."""
    out = [model(_to_input(images[i:i + batch_size])).float().numpy()
           for i in range(0, len(images), batch_size)]
    n_classes = model.net[-1].out_features
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted class per uint8 image [N, H, W, C]."""
    return logits(model, images, batch_size).argmax(1)


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(model, images) == np.asarray(labels)).mean())


def cached_classifier(key: str, images: np.ndarray, labels: np.ndarray, n_classes: int, *,
                      epochs: int = 2, progress: bool = True) -> tuple[SmallCNN, dict[str, Any]]:
    """The classifier for a labelled set whose content hash is `key`: loaded from the cache,
    or trained and cached (atomically)."""
    path = cache_root() / "classifiers" / f"v{VERSION}-{key[:32]}-{n_classes}-e{epochs}.safetensors"
    model = SmallCNN(images.shape[3], n_classes)
    if path.exists():
        try:
            raw = path.read_bytes()
            model.load_state_dict(st_load(raw))
            meta = json.loads(_metadata(raw).get("ganforge", "{}"))
            return model.eval(), {**meta, "cached": True, "path": str(path)}
        except Exception:  # noqa: BLE001 - a damaged cache entry is simply rebuilt
            pass
    model = train_classifier(images, labels, n_classes, epochs=epochs, progress=progress)
    meta = {"n_train": int(len(images)), "epochs": epochs, "key": key}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    io.write_bytes(path, st_save(state, metadata={"ganforge": json.dumps(meta)}))
    return model, {**meta, "cached": False, "path": str(path)}


def _metadata(raw: bytes) -> dict[str, str]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]).get("__metadata__", {})


__all__ = ["SmallCNN", "accuracy", "cached_classifier", "logits", "predict",
           "train_classifier"]
