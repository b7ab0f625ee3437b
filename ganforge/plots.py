"""Training curves as PNG plots, drawn from a run's metrics.jsonl.

Every plot draws measurements only (never configuration constants such as `kid_subsets`, which
eval records also carry), each quantity on an axis of its own scale. The plots are one table,
:data:`PLOTS`: a plot is a file, a title, the kind of record it reads (`train` or `eval`) and its
axes; an axis names the record keys it draws, so a new measured key is one more entry there.
Protocol-named figures (`fid250_train`, `kid5k_test`) are matched by pattern and named in the
title. :func:`plot_series` says what each plot would draw without drawing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ganforge import io, selection

Series = tuple[list[int], list[float]]  # (generator steps, values)


@dataclass(frozen=True)
class Axis:
    """One panel. `keys`: record keys drawn as lines, or `re:<regex>` for every matching key
    (protocol-named figures); `band`: suffix of the key holding each line's std, drawn as a
    band around it; `ref`: a horizontal reference line (value, label)."""

    label: str
    keys: tuple[str, ...]
    band: str | None = None
    ref: tuple[float, str] | None = None


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    kind: str  # which records: "train" (every log interval) or "eval" (every evaluation)
    axes: tuple[Axis, ...]
    best: bool = False  # mark the step of the best checkpoint (ganforge.selection)
    named: bool = False  # put the protocol names of its series in the title


FID = r"re:^fid\d+k?_.+$"  # fid250_train, fid5k_test: never the bare alias `fid`
KID = r"re:^kid\d+k?_.+(?<!_std)$"

PLOTS: tuple[Plot, ...] = (
    Plot("losses.png", "losses", "train", (
        Axis("loss", ("loss_D", "loss_G")),
        Axis("loss terms", ("loss_G_adv", "gp", "r1", "l1", "cycle", "identity", "loss_recon")))),
    Plot("accuracy.png", "D accuracy and G fooling rate", "train", (
        Axis("rate", ("d_acc_real", "d_acc_fake", "g_fool_rate", "g_choice_rate")),)),
    Plot("scores.png", "mean D output", "train", (Axis("D(x)", ("d_real", "d_fake")),)),
    Plot("grad_norms.png", "gradient norms", "train", (
        Axis("norm", ("grad_norm_D", "grad_norm_G")),)),
    Plot("speed.png", "real images / s", "train", (Axis("images / s", ("images_per_s",)),)),
    Plot("augmentation.png", "augmentation (ADA)", "train", (
        Axis("p, r_t", ("augment_p", "r_t")),)),
    Plot("quality.png", "quality (lower is better)", "eval", (
        Axis("FID", (FID,)), Axis("KID", (KID,), band="_std")), best=True, named=True),
    Plot("memorisation.png", "memorisation (nearest training image)", "eval", (
        Axis("distance", ("nn_dist",)),
        Axis("distance / real-real distance", ("nn_ratio",), ref=(0.5, "below: copying"))),
        best=True),
)


@dataclass
class AxisData:
    axis: Axis
    series: dict[str, Series]
    bands: dict[str, Series] = field(default_factory=dict)  # series name -> its std


@dataclass
class PlotData:
    plot: Plot
    title: str
    axes: list[AxisData]
    best_step: int | None
    events: list[tuple[int, str]]  # health events (step, problem)


def _series(records: list[dict], key: str) -> Series:
    pts = [(r["step"], float(r[key])) for r in records
           if selection.is_finite_number(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _keys(records: list[dict], wanted: tuple[str, ...]) -> list[str]:
    present = list(dict.fromkeys(k for r in records for k, v in r.items()
                                 if selection.is_finite_number(v)))
    out: list[str] = []
    for w in wanted:
        if w.startswith("re:"):
            out += sorted(k for k in present if re.match(w[3:], k))
        elif w in present:
            out.append(w)
    return out


def best_step(evals: list[dict]) -> int | None:
    """The best checkpoint's step (ganforge.selection) by the trainer's `fid`, else by the
    first protocol-named FID."""
    best = selection.best_eval(evals, (_keys(evals, (FID,)) or [None])[0])
    return None if best is None else best["step"]


def plot_plan(records: list[dict]) -> dict[str, PlotData]:
    """What every plot would draw from these metrics.jsonl records: the plots with at least one
    series, by file name."""
    steps = [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]
    by_kind = {"train": [r for r in steps if r.get("kind", "train") == "train"],
               "eval": [r for r in steps if r.get("kind") == "eval"]}
    events = [(r["step"], str(r.get("problem", "?"))) for r in steps if r.get("kind") == "health"]
    best = best_step(by_kind["eval"])
    plans = {}
    for plot in PLOTS:
        recs = by_kind[plot.kind]
        axes = []
        for axis in plot.axes:
            names = _keys(recs, axis.keys)
            data = AxisData(axis, {k: _series(recs, k) for k in names})
            if axis.band:
                data.bands = {k: _series(recs, k + axis.band) for k in names
                              if _keys(recs, (k + axis.band,))}
            if data.series:
                axes.append(data)
        if not axes:
            continue
        title = plot.title
        if plot.named:
            title += ": " + ", ".join(k for a in axes for k in a.series)
        plans[plot.file] = PlotData(plot, title, axes, best if plot.best else None, events)
    return plans


def plot_series(records: list[dict]) -> dict[str, dict[str, Series]]:
    """{plot file: {series name: (steps, values)}}: the lines each plot would draw."""
    return {f: {k: v for a in p.axes for k, v in a.series.items()}
            for f, p in plot_plan(records).items()}


def _draw(plan: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    n = len(plan.axes)
    fig, axs = plt.subplots(n, 1, figsize=(6, 1.2 + 2.2 * n), sharex=True, squeeze=False)
    for ax, data in zip(axs[:, 0], plan.axes, strict=True):
        for name, (x, y) in data.series.items():
            (line,) = ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None,
                              markersize=3)
            if name in data.bands:
                bx, std = data.bands[name]
                mean = dict(zip(x, y, strict=True))
                lo_hi = [(s, mean[s] - d, mean[s] + d) for s, d in zip(bx, std, strict=True)
                         if s in mean]
                if lo_hi:
                    ax.fill_between([p[0] for p in lo_hi], [p[1] for p in lo_hi],
                                    [p[2] for p in lo_hi], color=line.get_color(), alpha=0.2,
                                    label=f"{name} ± std")
        if data.axis.ref is not None:
            ax.axhline(data.axis.ref[0], color="gray", linestyle="--", linewidth=0.8,
                       label=data.axis.ref[1])
        if plan.best_step is not None:
            ax.axvline(plan.best_step, color="gray", linestyle=":",
                       label=f"best checkpoint @ {plan.best_step}")
        problems = ", ".join(sorted({problem for _, problem in plan.events}))
        for i, (step, _) in enumerate(plan.events):
            ax.axvline(step, color="red", linestyle=":", linewidth=0.8, alpha=0.6,
                       label=f"health: {problems}" if i == 0 else None)
        ax.set_ylabel(data.axis.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axs[0, 0].set_title(plan.title, fontsize=9)
    axs[-1, 0].set_xlabel("generator step")
    io.save_figure(fig, path)
    plt.close(fig)


def plot_run(run_dir: str | Path) -> list[Path]:
    """(Re)draw every plot of a run into run_dir/plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    written = []
    for name, plan in plot_plan(io.read_jsonl(run_dir / "metrics.jsonl")).items():
        path = run_dir / "plots" / name
        _draw(plan, path)
        written.append(path)
    return written
