"""`ganforge translate`: image files or folders through a pix2pix / CycleGAN generator.

Each input is decoded like training data (gray or RGB as the model, resized to its size);
files that cannot be used are reported and skipped, never fatal. Outputs are PNGs at the
model's size and mode, named after their inputs (sub-folders kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganforge import data
from ganforge.errors import GanforgeError
from ganforge.sample import LoadedGenerator, save_png


@dataclass
class TranslateReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def load_inputs(src: Path, size: int, channels: int
                ) -> tuple[list[tuple[Path, np.ndarray]], list[tuple[str, str]]]:
    """The usable images under `src` (a file or folder) and the skipped files with reasons."""
    if not src.exists():
        raise GanforgeError(f"--in not found: {src}")
    files = [src] if src.is_file() else data.list_images(src)
    if not files:
        raise GanforgeError(f"no image files found under {src}")
    root = src.parent if src.is_file() else src
    good, skipped = [], []
    for p in files:
        try:
            good.append((p.relative_to(root), data._load_image(p, channels, size, 1.0)))
        except ValueError as e:
            skipped.append((str(p.relative_to(root)), str(e)))
    return good, skipped


def translate_files(gen: LoadedGenerator, src: str | Path, out_dir: str | Path,
                    direction: str = "a2b", batch_size: int = 32) -> TranslateReport:
    """Translate every image under `src` into `out_dir` (NAME.png for each input NAME.*)."""
    if direction not in gen.directions:
        raise GanforgeError(f"--direction {direction} is not available for "
                            f"{gen.config.variant}; use {' or '.join(gen.directions)}")
    good, skipped = load_inputs(Path(src), gen.size, gen.channels)
    report = TranslateReport(skipped=skipped)
    out, used = Path(out_dir), set()
    for i in range(0, len(good), batch_size):
        chunk = good[i:i + batch_size]
        results = gen.translate(np.stack([a for _, a in chunk]), direction)
        for (rel, _), image in zip(chunk, results, strict=True):
            name = rel.with_suffix(".png")
            if name in used:  # a.jpg and a.png side by side
                name = rel.with_name(rel.name + ".png")
            used.add(name)
            save_png(out / name, image)
            report.written.append(out / name)
    return report
