"""The measuring steps of bench/gpu_check.sh (one GPU), each writing a JSON file.

    python bench/bench_gpu.py step --out R/step.json [--device cuda] [--dry-run]
    python bench/bench_gpu.py inception --out R/inception.json [--n 2000] [--dry-run]
    python bench/bench_gpu.py quality --run RUN --eval R/eval.json --out R/quality.json
    python bench/bench_gpu.py report R [--doc docs/BENCHMARKS.md]

`step`: real images/s of a training step of the 80x80 face tutorial architecture (WGAN-GP:
DCGAN G from 5x5, InstanceNorm critic, n_critic 5, gradient penalty 10, Adam 1e-4 (0, 0.9),
batch 64, RGB) in a plain float32 PyTorch loop (what the tutorial writes: minibatches indexed
on the host and copied to the GPU, float32, unfused Adam) and in `ganforge train` with the
settings named, alternating, on the same GPU.

`inception`: Inception features/s of a plain float32 loop (the shipped TorchScript, batch 50,
grid_sample resize, PyTorch's defaults: cuDNN's TF32 convolutions) and of ganforge's
FeatureExtractor in float32 (IEEE), tf32 and bfloat16, on the same 2n Fashion-MNIST test
images; FID of test[0:n] vs test[n:2n] for each (float32 on the CPU is 12.3561 at n = 2000).

`report`: one markdown section from the JSON files, between the `gpu_check` markers of
docs/BENCHMARKS.md (bench/benchdoc.py).

`step` and `inception` rewrite their JSON file after every measurement: a row that fails (or
the step killed at its time limit) costs that row, which becomes a note, never the others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inception import _plain_loop  # noqa: E402
from benchdoc import DOC, machine, write_section  # noqa: E402

FACE80 = {"variant": "wgan-gp", "size": 80, "channels": 3, "batch_size": 64}
STEP_SETTINGS = {
    "ganforge fp32": {"amp": "off", "channels_last": False},
    "ganforge bf16 channels_last": {"amp": "bf16", "channels_last": True},
    "ganforge bf16 channels_last compile": {"amp": "bf16", "channels_last": True,
                                            "compile": True},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_wgan_gp(cfg, images: torch.Tensor, device: torch.device, seconds: float,
                  warmup: int = 3) -> float:
    """Real images/s of a straightforward float32 WGAN-GP loop over ganforge's networks."""
    from ganforge.variants import get_variant

    torch.manual_seed(0)
    nets = get_variant(cfg.variant).build(cfg, images.shape[-1], images.shape[1])
    G, D = nets["G"].to(device).train(), nets["D"].to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2),
                             foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2),
                             foreach=False)
    b = cfg.batch_size

    def d_step() -> None:
        real = images[torch.randint(len(images), (b,))].to(device).float() / 127.5 - 1
        fake = G(torch.randn(b, cfg.z_dim, device=device)).detach()
        eps = torch.rand(b, 1, 1, 1, device=device)
        x = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        gp = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        loss = D(fake).mean() - D(real).mean() + cfg.gp_weight * gp
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def g_step() -> None:
        loss = -D(G(torch.randn(b, cfg.z_dim, device=device))).mean()
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    def iteration() -> None:
        for _ in range(cfg.n_critic):
            d_step()
        g_step()

    for _ in range(warmup):
        iteration()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        iteration()
        n += 1
    _sync(device)
    return n * cfg.n_critic * b / (time.perf_counter() - t0)


def ganforge_step(layers: list[dict], run: Path, seconds: float, log_every: int,
                  steps: int = 0) -> float:
    """Real images/s that `ganforge train` logs (the first log interval, warm-up and any
    compilation, dropped), training for `seconds` (or `steps` G steps)."""
    from ganforge.config import build_config
    from ganforge.train import train

    length = {"steps": steps, "minutes": 0.0} if steps else \
        {"steps": 10**8, "minutes": seconds / 60}
    cfg = build_config(layers + [{**length, "log_every": log_every, "sample_every": 10**7,
                                  "eval_n": 0, "tensorboard": False, "health": False}])
    train(cfg, run, progress=False)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("kind") == "train"][1:]
    if len(recs) < 2:  # e.g. compilation took (nearly) all the time
        raise RuntimeError(f"{len(recs)} log interval(s) after the first in {seconds:g} s")
    return (recs[-1]["kimg"] - recs[0]["kimg"]) * 1000 / (recs[-1]["time_s"] - recs[0]["time_s"])


def _note(notes: list[str], name: str, e: BaseException) -> None:
    notes.append(f"{name}: {type(e).__name__}: {e}"[:400])
    print(f"{name}: failed ({type(e).__name__}: {e})", flush=True)


def cmd_step(a: argparse.Namespace) -> None:
    from ganforge import data
    from ganforge.config import build_config

    device = torch.device(a.device)
    base = dict(FACE80, device=a.device)
    settings = dict(STEP_SETTINGS)
    if a.dry_run:  # seconds on a CPU: small widths and batch, no compile
        base.update(batch_size=8, g_width=16, d_width=16)
        settings = {"ganforge fp32": settings["ganforge fp32"]}
    results: dict[str, list[float]] = {"plain fp32 loop": []}
    out: dict = {"model": "", "seconds": a.seconds, "rounds": a.rounds, "rows": [], "notes": []}

    def save() -> None:  # after every measurement
        plain = results["plain fp32 loop"]
        plain_ips = statistics.median(plain) if plain else None
        out["rows"] = [{"loop": k, "images_per_s": statistics.median(v),
                        "vs_plain": statistics.median(v) / plain_ips if plain_ips else None}
                       for k, v in results.items() if v]
        Path(a.out).write_text(json.dumps(out, indent=2))

    def measure(name: str, fn) -> None:
        try:
            results.setdefault(name, []).append(fn())
        except Exception as e:  # noqa: BLE001 - one failed row is a note, the others stay
            _note(out["notes"], name, e)
        save()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = data.prepare("fashion-mnist", tmp / "data", size=80, channels=3,
                          limit=300 if a.dry_run else 5000, progress=False)
        layers = [{**base, "data": str(ds.path)}]
        cfg = build_config(layers)
        out["model"] = (f"wgan-gp 80x80x3, G/D width {cfg.g_width}/{cfg.d_width}, batch "
                        f"{cfg.batch_size}, n_critic {cfg.n_critic}")
        save()
        images = torch.from_numpy(np.array(ds.images)).permute(0, 3, 1, 2).contiguous()
        for r in range(a.rounds):
            measure("plain fp32 loop", lambda: plain_wgan_gp(cfg, images, device, a.seconds))
            for name, extra in settings.items():
                run = tmp / f"{name}-{r}".replace(" ", "_")
                # compile: the first interval holds the compilation; give it time
                secs = a.seconds + (a.compile_seconds if extra.get("compile") else 0)
                measure(name, lambda run=run, extra=extra, secs=secs: ganforge_step(
                    layers + [extra], run, secs, 1 if a.dry_run else 5,
                    steps=4 if a.dry_run else 0))  # dry run: 4 steps, whatever they take
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in
                                                  results.items() if v), flush=True)
    for row in out["rows"]:
        vs = f"x{row['vs_plain']:.2f}" if row["vs_plain"] else ""
        print(f"{row['loop']:40s} {row['images_per_s']:10,.0f} img/s  {vs}")


def cmd_inception(a: argparse.Namespace) -> None:
    from ganforge import data
    from ganforge.metrics.extract import FeatureExtractor
    from ganforge.metrics.scores import feature_stats, fid_from_stats

    device = torch.device(a.device)
    n = 5 if a.dry_run else a.n
    img_path, _ = data.fashion_mnist_files("test")
    images = data.read_idx(img_path)[: 2 * n]
    if images.ndim == 3:
        images = images[..., None]
    stats_dev = None if device.type == "cpu" else a.device
    out: dict = {"n": n, "rows": [], "notes": []}

    def save() -> None:  # after every contestant
        rows = out["rows"]
        plain = next((r["features_per_s"] for r in rows if r["extractor"] == "plain fp32 loop"),
                     None)
        ref = next((r["fid"] for r in rows if r["extractor"] == "ganforge float32"), None)
        for r in rows:
            r["vs_plain"] = r["features_per_s"] / plain if plain else None
            r["fid_vs_float32"] = r["fid"] / ref - 1 if ref else None
        Path(a.out).write_text(json.dumps(out, indent=2))

    def plain_loop():
        plain = _plain_loop(50, a.device)
        return lambda x: plain(x)[0]

    def ganforge_extractor(dtype: str):
        ex = FeatureExtractor(a.device, dtype=dtype, progress=False)
        return lambda x: ex.extract(x).features

    contestants = {"plain fp32 loop": plain_loop}
    # tf32 is float32 on a CPU: a dry run leaves it out
    for dtype in ("float32", "bfloat16") if a.dry_run else ("float32", "tf32", "bfloat16"):
        contestants[f"ganforge {dtype}"] = lambda dtype=dtype: ganforge_extractor(dtype)
    for name, make in contestants.items():
        try:
            run = make()
            if not a.dry_run:
                run(images[:50])  # warm-up: kernels picked, weights on the device
            _sync(device)
            t0 = time.perf_counter()
            feats = run(images)
            _sync(device)
            seconds = time.perf_counter() - t0
            fid = fid_from_stats(*feature_stats(feats[:n], stats_dev),
                                 *feature_stats(feats[n:], stats_dev), device=stats_dev)
        except Exception as e:  # noqa: BLE001 - one failed contestant is a note
            _note(out["notes"], name, e)
            save()
            continue
        out["rows"].append({"extractor": name, "images": len(images),
                            "features_per_s": len(images) / seconds, "fid": fid})
        save()
        print(f"{name:24s} {len(images) / seconds:9,.0f} features/s  FID {fid:.4f}", flush=True)


def cmd_quality(a: argparse.Namespace) -> None:
    """Summarise the `gpu` preset run and its `ganforge evaluate --json` output."""
    recs = [json.loads(x) for x in (Path(a.run) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    scores = _read(Path(a.eval)) or {}  # evaluate failed or was killed: the training stays
    fid_key = next((k for k in scores if k.startswith("fid") and not k.endswith("_std")), None)
    ips = [r["images_per_s"] for r in train[1:]] or [0.0]
    out = {"steps": train[-1]["step"] if train else 0,
           "kimg": train[-1]["kimg"] if train else 0.0,
           "time_s": train[-1]["time_s"] if train else 0.0,
           "images_per_s": statistics.median(ips), "quick_evals": len(evals),
           "fid_key": fid_key, "fid": scores.get(fid_key), "n_fake": scores.get("n_fake"),
           "n_real": scores.get("n_real")}
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


HOW = ("Run on one GPU machine of this project's device tool (no network): `bash "
       "bench/gpu_carry.sh` here, then two calls, the second at once: `bash bench/gpu_check.sh "
       "--stage` carrying `.gpu-carry-1` (part 1 of the Inception weights), then `bash "
       "bench/gpu_check.sh` carrying `.gpu-carry` (the rest, Fashion-MNIST, sprites, wheels); "
       "the exact calls are at the top of bench/gpu_check.sh.")


def _steps(res: Path) -> list[tuple[str, int, int, int]]:
    """(name, seconds, limit, status) of each step gpu_check.sh ran, from steps.tsv."""
    try:
        rows = [x.split("\t") for x in (res / "steps.tsv").read_text().splitlines() if x]
    except OSError:
        return []
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows if len(r) == 4]


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def cmd_report(a: argparse.Namespace) -> None:
    res = Path(a.results)
    dry = (res / "dry-run").exists()
    where = ((res / "machine.txt").read_text().strip() if (res / "machine.txt").exists()
             else machine())  # the GPU machine's, also when the report is made elsewhere
    lines = ["## One GPU: bench/gpu_check.sh", "", HOW, ""]
    lines.append(f"Machine: {where}." + (" **Dry run on a CPU (tiny sizes): these figures "
                                         "check the script, they measure nothing.**"
                                         if dry else ""))
    steps = _steps(res)
    lines.append(f"Command: `bench/gpu_check.sh{' --dry-run' if dry else ''}`; seconds per step "
                 "(limit): " + ", ".join(f"{n} {t} ({lim})" for n, t, lim, _ in steps) + ".")
    for name, t, _, rc in steps:
        if rc:
            why = "killed at its limit" if rc in (124, 137) else f"ended with status {rc}"
            lines.append(f"Step `{name}` {why} after {t} s (see {name}.log); what it wrote "
                         "before is kept below.")
    pytest_txt = (res / "pytest.txt").read_text().strip() if (res / "pytest.txt").exists() else ""
    lines += ["", "1. `pytest -m gpu`: " + (pytest_txt.splitlines() or ["not run"])[-1]]
    q = _read(res / "quality.json")
    if q and q.get("fid") is not None:
        lines.append(f"2. `gpu` preset on Fashion-MNIST, {q['time_s']:.0f} s of training: "
                     f"{q['steps']:,} G steps, {q['kimg']:,.0f} kimg, {q['images_per_s']:,.0f} "
                     f"real images/s; **{q['fid_key']} = {q['fid']:.2f}** ({q['n_fake']:,} "
                     f"generated vs {q['n_real']:,} test images; target <= 10)")
    elif q:
        lines.append(f"2. `gpu` preset on Fashion-MNIST, {q['time_s']:.0f} s of training: "
                     f"{q['steps']:,} G steps, {q['kimg']:,.0f} kimg, {q['images_per_s']:,.0f} "
                     "real images/s; no FID (see evaluate.log)")
    else:
        lines.append("2. `gpu` preset: no result (see train.log, quality.log)")
    s = _read(res / "step.json")
    lines += ["", f"3. Training step, {s['model']} (target >= 15,000 real images/s; the "
                  "tutorial's own loop: about 4,900):" if s else
              "3. Training step: no result (see step.log)"]
    if s and s["rows"]:
        lines += ["", "| loop | real images/s | vs plain |", "|---|---|---|"]
        lines += [f"| {r['loop']} | {r['images_per_s']:,.0f} | {_x(r['vs_plain'])} |"
                  for r in s["rows"]]
    if s and s.get("notes"):
        lines += ["", "Not measured: " + "; ".join(s["notes"])]
    i = _read(res / "inception.json")
    lines += ["", f"4. Inception on test[0:{i['n']}] + test[{i['n']}:{2 * i['n']}] (target: "
                  ">= 5x the plain loop, FID within 0.1 % of float32):" if i else
              "4. Inception: no result (see inception.log)"]
    if i and i["rows"]:
        lines += ["", "| extractor | features/s | vs plain | FID | vs float32 |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['extractor']} | {r['features_per_s']:,.0f} | {_x(r['vs_plain'])} | "
                  f"{r['fid']:.4f} | "
                  + (f"{r['fid_vs_float32']:+.3%}" if r["fid_vs_float32"] is not None else "-")
                  + " |" for r in i["rows"]]
    if i and i.get("notes"):
        lines += ["", "Not measured: " + "; ".join(i["notes"])]
    small = (res / "smalldata.txt").read_text().strip() if (res / "smalldata.txt").exists() \
        else ""
    if small:
        lines += ["", f"5. Small colour data at 128 px (issue 15): {small}"]
    text = "\n".join(lines)
    print(text)
    (res / "gpu_check.md").write_text(text + "\n")
    doc = Path(a.doc) if a.doc else DOC
    write_section("gpu_check", text, doc)
    print(f"\nwritten to {doc} (between the gpu_check markers) and {res / 'gpu_check.md'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("step")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--seconds", type=float, default=12.0)
    s.add_argument("--compile-seconds", type=float, default=40.0,
                   help="more seconds for the compile row (its first interval compiles)")
    s.add_argument("--rounds", type=int, default=1)
    s.add_argument("--dry-run", action="store_true")
    s = sub.add_parser("inception")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--dry-run", action="store_true")
    s = sub.add_parser("quality")
    s.add_argument("--run", required=True)
    s.add_argument("--eval", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("--doc")
    a = p.parse_args()
    {"step": cmd_step, "inception": cmd_inception, "quality": cmd_quality,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
