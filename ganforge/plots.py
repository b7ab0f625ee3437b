"""Training curves as PNG plots, drawn from a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from ganforge import io

# (file name, title, metric keys) for each plot.
PANELS = [
    ("losses.png", "losses", ["loss_D", "loss_G", "gp"]),
    ("accuracy.png", "D accuracy and G fooling rate",
     ["d_acc_real", "d_acc_fake", "g_fool_rate", "g_choice_rate"]),
    ("scores.png", "mean D output", ["d_real", "d_fake"]),
    ("grad_norms.png", "gradient norms", ["grad_norm_D", "grad_norm_G"]),
    ("speed.png", "real images / s", ["images_per_s"]),
]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: str | Path) -> list[Path]:
    """(Re)draw every plot of a run into run_dir/plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = io.read_jsonl(run_dir / "metrics.jsonl")
    train_recs = [r for r in records if r.get("kind", "train") == "train"]
    eval_recs = [r for r in records if r.get("kind") == "eval"]
    written = []
    panels = list(PANELS)
    fid_keys = sorted({k for r in eval_recs for k in r if k.startswith(("fid", "kid"))
                       and not k.endswith("_std")})
    if fid_keys:
        panels.append(("fid.png", "quality (lower is better)", fid_keys))
    for fname, title, keys in panels:
        source = eval_recs if fname == "fid.png" else train_recs
        series = {k: _series(source, k) for k in keys}
        series = {k: v for k, v in series.items() if v[0]}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for k, (x, y) in series.items():
            ax.plot(x, y, label=k, marker="o" if len(x) < 30 else None, markersize=3)
        if fname == "fid.png":
            best = min(eval_recs, key=lambda r: r.get(fid_keys[0], float("inf")))
            ax.axvline(best["step"], color="gray", linestyle=":", label=f"best @ {best['step']}")
        ax.set_title(title)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = run_dir / "plots" / fname
        io.save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written
