"""Benchmark Inception feature extraction and write its section of docs/BENCHMARKS.md.

Measures, on real Fashion-MNIST test images:
  1. features/s of a straightforward float32 loop (the shipped TorchScript, batch 50,
     torch.no_grad, default malloc, fid-helper-style grid_sample resize) and of ganforge's
     FeatureExtractor in float32 and bfloat16, each in a fresh process, side by side;
  2. peak RSS of a streaming extraction (images generated batch by batch) for several N;
  3. FID of test[0:n] vs test[n:2n] in float32 and bfloat16, and their relative difference.

    .venv/bin/python bench/bench_inception.py                      # full run, updates the doc
    .venv/bin/python bench/bench_inception.py --n-fid 1000 --rss-n 200,1000 --no-doc
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench_inception:start -->", "<!-- bench_inception:end -->"
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


# ---------------------------------------------------------------------------------------------
# workers (each runs in its own process so malloc settings and caches do not leak)


def _images(n: int, offset: int = 0) -> np.ndarray:
    from ganforge.metrics.idx import fashion_mnist

    return fashion_mnist("test", offset + n)[offset:]


def _plain_loop(batch: int, device: str = "cpu"):
    """The no-tricks loop: TorchScript, NCHW float32, grid_sample resize, no_grad (on a GPU:
    PyTorch's defaults, so cuDNN's TF32 convolutions)."""
    import warnings

    import torch
    import torch.nn.functional as F

    from ganforge.metrics.weights import verify_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(str(verify_weights()), map_location=device).eval()

    def run(images: np.ndarray) -> tuple[np.ndarray, list[float]]:
        feats, times = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                t0 = time.perf_counter()
                x = torch.from_numpy(np.array(images[i:i + batch])).to(device)
                x = x.permute(0, 3, 1, 2).float()
                x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
                n, c, h, w = x.shape
                theta = torch.eye(2, 3, device=device)
                theta[0, 2] += 1 / w - 1 / 299
                theta[1, 2] += 1 / h - 1 / 299
                grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, c, 299, 299],
                                     align_corners=False)
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                  align_corners=False)
                feats.append(net((x - 128) / 128).cpu().numpy())
                times.append(time.perf_counter() - t0)
        return np.concatenate(feats), times

    return run


def _ganforge(batch: int, dtype: str):
    import torch

    from ganforge.metrics import FeatureExtractor, load_inception

    ex = FeatureExtractor(dtype=dtype.removesuffix("-all"), batch_size=batch, progress=False)
    if dtype == "bfloat16-all":  # the rejected variant: the stem in bfloat16 too
        ex.net = load_inception().to(memory_format=torch.channels_last).use_bfloat16("conv")

    def run(images: np.ndarray) -> tuple[np.ndarray, list[float]]:
        feats, times = [], []
        for i in range(0, len(images), batch):
            t0 = time.perf_counter()
            feats.append(ex.extract(images[i:i + batch]).features)
            times.append(time.perf_counter() - t0)
        return np.concatenate(feats), times

    return run


def worker(kind: str, n: int, offset: int, batch: int, out: str) -> None:
    images = _images(n, offset)
    run = _plain_loop(batch) if kind == "plain" else _ganforge(batch, kind)
    run(images[:2 * batch])  # warm-up, not timed: oneDNN primitives, TorchScript profiling runs
    feats, times = run(images)
    np.savez(out, features=feats, times=np.array(times))


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def rss_worker(n: int, batch: int, dtype: str) -> None:
    """Stream n generated images through the extractor, sampling RSS before every batch."""
    from ganforge.metrics import FeatureExtractor

    pool = _images(1000)
    state = {"i": 0}
    trace: list[tuple[int, int]] = []  # (images done, current RSS KiB)

    def generate(k: int) -> np.ndarray:  # streams: one batch of images exists at a time
        trace.append((state["i"], _rss_kb()))
        i = state["i"] % (len(pool) - k)
        state["i"] += k
        return pool[i:i + k].copy()

    ex = FeatureExtractor(dtype=dtype, batch_size=batch, progress=False)
    t0 = time.perf_counter()
    feats = ex.extract(generate, n=n).features
    elapsed = time.perf_counter() - t0
    trace.append((n, _rss_kb()))
    half = [(x, y) for x, y in trace if x >= n // 2]
    slope = float(np.polyfit([x for x, _ in half], [y for _, y in half], 1)[0])
    print(json.dumps({
        "n": n, "seconds": elapsed, "features_mb": feats.nbytes / 2**20,
        "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_after_first_batch_kb": trace[1][1], "rss_end_kb": trace[-1][1],
        "slope_kb_per_image_second_half": slope,
    }))


# ---------------------------------------------------------------------------------------------
# orchestration


def _sub(args: list[str], env: dict | None = None) -> str:
    full_env = {**os.environ, **(env or {})}
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env=full_env, check=False)
    if res.returncode:
        raise RuntimeError(f"worker {args} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def run_speeds(contestants: list[tuple[str, int, dict | None]], batch: int,
               rounds: int) -> list[dict]:
    """Run every contestant on its images in ``rounds`` chunks, alternating contestants
    round by round so that load from other jobs falls on all of them alike."""
    feats: list[list[np.ndarray]] = [[] for _ in contestants]
    times: list[list[np.ndarray]] = [[] for _ in contestants]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, (kind, n, env) in enumerate(contestants):
                chunk = -(-n // rounds)
                lo, hi = r * chunk, min(n, (r + 1) * chunk)
                if hi <= lo:
                    continue
                out = os.path.join(tmp, f"{i}-{r}.npz")
                _sub(["--worker", kind, "--n", str(hi - lo), "--offset", str(lo),
                      "--batch-size", str(batch), "--out", out], env)
                with np.load(out) as z:
                    feats[i].append(z["features"])
                    times[i].append(z["times"])
                print(f"  round {r}: {kind} {'(malloc env) ' if env else ''}"
                      f"{(hi - lo) / times[i][-1].sum():.2f} img/s", flush=True)
    results = []
    for f, t in zip(feats, times, strict=True):
        f = np.concatenate(f)
        results.append({"features": f, "img_s": len(f) / np.concatenate(t).sum()})
    return results


def machine() -> dict:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    flags = re.search(r"Flags:\s*(.+)", lscpu)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "nproc": os.cpu_count(),
        "avx512_bf16": bool(flags and "avx512_bf16" in flags.group(1).split()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def _kib(r: dict) -> str:
    return f"{round(r['slope_kb_per_image_second_half'], 1) + 0.0:.1f}"  # no "-0.0"


def write_doc(text: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    body = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    section = f"{START}\n{text.rstrip()}\n{END}"
    if START in body and END in body:
        body = body[: body.index(START)] + section + body[body.index(END) + len(END):]
    else:
        body = body.rstrip() + "\n\n" + section + "\n"
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(body)
    os.replace(tmp, DOC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-speed", type=int, default=200, help="images timed per contestant")
    ap.add_argument("--n-fid", type=int, default=1000,
                    help="FID of test[0:n] vs test[n:2n] in float32 and bfloat16 (0: skip)")
    ap.add_argument("--rss-n", default="1000", help="streaming N values for peak RSS")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2,
                    help="contestants alternate in this many rounds (fairer under shared load)")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not edit the doc")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rss-dtype", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "rss":
        return rss_worker(a.n, a.batch_size, a.rss_dtype)
    if a.worker:
        return worker(a.worker, a.n, a.offset, a.batch_size, a.out)

    from ganforge.metrics import DEFAULT_DTYPE, fid

    t_start = time.time()
    load_before = os.getloadavg()[0]
    info = machine()
    bs = a.batch_size
    n_gf = max(a.n_speed, 2 * a.n_fid)
    print(f"machine: {info}", flush=True)
    plain, plain_env, fp32, bf16, bf16_all = run_speeds(
        [("plain", a.n_speed, None), ("plain", a.n_speed, MALLOC_ENV), ("float32", n_gf, None),
         ("bfloat16", n_gf, None), ("bfloat16-all", n_gf, None)], bs, a.rounds)
    for name, r in (("plain loop", plain), ("plain loop + malloc env", plain_env),
                    ("ganforge float32", fp32), ("ganforge bfloat16", bf16),
                    ("all-bfloat16", bf16_all)):
        print(f"{name}: {r['img_s']:.2f} img/s", flush=True)
    k = min(len(plain["features"]), len(fp32["features"]))
    same = np.linalg.norm(fp32["features"][:k] - plain["features"][:k]) / np.linalg.norm(
        plain["features"][:k])

    fid_rows = fid_head = ""
    if a.n_fid:
        m = a.n_fid
        h = m // 2
        spans = [((0, m), (m, 2 * m)), ((0, h), (h, m)), ((m, m + h), (m + h, 2 * m))]
        fids = {}
        for name, r in (("float32", fp32), ("bfloat16", bf16), ("bfloat16-all", bf16_all)):
            f = r["features"]
            fids[name] = [fid(f[a:b], f[c:d]) for (a, b), (c, d) in spans]
        pairs = [f"test[{a}:{b}] vs [{c}:{d}]" for (a, b), (c, d) in spans]
        for name, vals in fids.items():
            rels = [(v - ref) / ref for v, ref in zip(vals, fids["float32"], strict=True)]
            cells = " | ".join(f"{v:.4f} ({rel:+.2%})" for v, rel in zip(vals, rels, strict=True))
            fid_rows += f"| {name} | {cells} |\n"
            print(f"FID {name}: {vals} rel {rels}", flush=True)
        fid_head = ("| precision | " + " | ".join(f"FID {p}" for p in pairs) + " |\n"
                    + "|---" * (len(pairs) + 1) + "|\n")

    rss = []
    for n in [int(v) for v in a.rss_n.split(",") if v]:
        out = _sub(["--worker", "rss", "--n", str(n), "--batch-size", str(bs),
                    "--rss-dtype", DEFAULT_DTYPE])
        rss.append(json.loads(out.strip().splitlines()[-1]))
        print(f"RSS N={n}: {rss[-1]}", flush=True)
    rss_rows = "".join(
        f"| {r['n']:,} | {r['rss_after_first_batch_kb'] / 1024:.0f} MiB | "
        f"{r['rss_end_kb'] / 1024:.0f} MiB | {r['peak_kb'] / 1024:.0f} MiB | "
        f"{_kib(r)} KiB | {r['features_mb']:.1f} MiB | "
        f"{r['n'] / r['seconds']:.1f} img/s |\n" for r in rss)
    growth = ""
    if rss:
        r = rss[-1]
        at10k = r["peak_kb"] + 8 * (10_000 - r["n"])
        growth = (
            f"Over the second half of the N = {r['n']:,} run RSS grew by "
            f"{_kib(r)} KiB per image; the features themselves "
            f"are 8 KiB per image. N = 10,000 was not run (about "
            f"{10_000 / (r['n'] / r['seconds']) / 60:.0f} min here); with the same growth its "
            f"peak would be about {at10k / 1024:.0f} MiB.\n"
        )
    load_after = os.getloadavg()[0]
    cmd = "python bench/bench_inception.py " + " ".join(sys.argv[1:])

    def row(label: str, n: int, r: dict) -> str:
        return f"| {label} | {n} | {r['img_s']:.2f} | {r['img_s'] / plain['img_s']:.1f}x |\n"

    speed_rows = (
        row("plain float32 loop: TorchScript, NCHW, grid_sample, no_grad", a.n_speed, plain)
        + row("same loop, `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1G`", a.n_speed, plain_env)
        + row("ganforge `FeatureExtractor`, float32", n_gf, fp32)
        + row("ganforge `FeatureExtractor`, bfloat16 (stem float32)", n_gf, bf16)
        + row("whole network in bfloat16 (rejected)", n_gf, bf16_all)
    )
    text = f"""## Inception feature extraction

Machine: {info['cpu']}, {info['nproc']} cores (AVX-512 BF16: {info['avx512_bf16']}), torch
{info['torch']} ({info['threads']} threads), Python {info['python']}; {info['date']}. Load
average {load_before:.1f} before and {load_after:.1f} after the run (other work shared the
machine). Command: `{cmd.strip()}` ({(time.time() - t_start) / 60:.1f} min).

Features/s on Fashion-MNIST test images (28x28 gray, resized to 299x299), batch {bs}, each
contestant in fresh processes (two untimed warm-up batches each), alternating in {a.rounds} rounds:

| extractor | images | features/s | vs plain loop |
|---|---|---|---|
{speed_rows}
ganforge float32 features differ from the plain loop's by {same:.1e} (relative L2 norm).
Default precision: {DEFAULT_DTYPE}.

FID by precision (in brackets: difference from float32 on the same images; the project
accepts bfloat16 only within 0.5 %):

{fid_head}{fid_rows}
On the reference pair, test[0:2000] vs test[2000:4000] (`--n-fid 2000`, run separately on
2026-11-24 with the same code): float32 12.3561 (the independent reference is 12.356),
bfloat16 with a float32 stem 12.2998 (-0.46 %), whole network in bfloat16 12.2210 (-1.09 %);
on three 1,000 vs 1,000 pairs the float32-stem variant was -0.44 %, -0.47 % and -0.49 %.
bfloat16 always lowers FID (its rounding noise adds variance to both feature sets), and the
float32-stem variant uses nearly all of the 0.5 % budget, so **float32 stays the default** and
bfloat16 is opt-in (`FeatureExtractor(dtype="bfloat16")`). float32 runs near this CPU's peak
(oneDNN conv is 89 % of the time; fusing ReLU into the conv or pre-packing the weights gained
nothing measurable), so the 4x target over the plain loop is not reached with a precision that
keeps FID within tolerance.

Peak RSS of a streaming extraction (images produced batch by batch by a generator,
{DEFAULT_DTYPE}):

| N | RSS after 1st batch | RSS at end | peak RSS | growth/image (2nd half) | features | speed |
|---|---|---|---|---|---|---|
{rss_rows}
{growth}"""
    print(text)
    if not a.no_doc:
        write_doc(text)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
