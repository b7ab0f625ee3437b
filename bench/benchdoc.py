"""Append a result row to a section's table in docs/BENCHMARKS.md (creating the section)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"


def machine() -> str:
    """CPU model and core count (or the GPU name) of this machine."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU"
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return f"{text}, torch {torch.__version__}, {datetime.date.today()}"


def add_row(header: str, intro: str, columns: list[str], row: list[str],
            doc: Path = DOC) -> None:
    """Add `row` under the table of the section `header` (## level), creating both if needed."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    line_row = "| " + " | ".join(row) + " |"
    if f"## {header}" not in lines:
        lines += ["", f"## {header}", "", intro, "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns), line_row]
    else:
        i = lines.index(f"## {header}") + 1
        while i < len(lines) and not lines[i].startswith("|"):
            i += 1
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        lines.insert(i, line_row)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")


def write_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->` in `doc` with
    `text` (appending the marked section at the end when the markers are absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{start}\n{text.strip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new)
