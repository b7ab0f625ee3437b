"""Benchmark of the web explorer's image endpoint, with and without micro-batching.

    .venv/bin/python bench/bench_serve.py                 # writes its section of docs/BENCHMARKS.md
    .venv/bin/python bench/bench_serve.py --seconds 5 --no-doc   # a quick look

A 64x64 gray DCGAN generator with the default widths (variant=dcgan, z_dim=100, g_width=64) is
trained for a handful of steps on Fashion-MNIST resized to 64 px (the weights hardly matter to
the speed, but they are a real checkpoint). For each mode, a real `ganforge serve` process is
started on 127.0.0.1 (GANFORGE_SERVE_MICROBATCH=1 or 0), both at once, and they are measured
over real HTTP in alternating slices, so that the load of other jobs drifts over both alike:

- 1 client: sequential POST /api/image requests (random z), latency p50/p99;
- 32 clients: 32 concurrent clients, each sending its next request as soon as the previous
  one returns, for --seconds; requests/s, p50/p99, errors, CPU per request.

The clients are minimal asyncio HTTP/1.1 keep-alive connections by default (`--client httpx`
uses httpx.AsyncClient instead, which spends about as much CPU per request as the server).

Client and server share the machine's cores, and so do other users of the machine: the
script records `uptime` before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench_serve:start -->", "<!-- bench_serve:end -->"
TRAIN = {"variant": "dcgan", "size": 64, "channels": 1, "batch_size": 16, "steps": 5,
         "log_every": 5, "sample_every": 5, "grid_size": 16, "threads": 1, "health": False}


def make_checkpoint(work: Path, limit: int) -> Path:
    from ganforge import data
    from ganforge.config import build_config
    from ganforge.train import train

    ds_dir, run = work / "fmnist64", work / "run"
    data.prepare("fashion-mnist", ds_dir, size=64, limit=limit, progress=False)
    train(build_config([{"data": str(ds_dir), **TRAIN}]), run, progress=False)
    return run


def generator_facts(run: Path) -> dict:
    from ganforge.sample import load_generator

    gen = load_generator(run)
    return {"params_m": sum(p.numel() for p in gen.G.parameters()) / 1e6, "z_dim": gen.z_dim,
            "size": gen.size, "g_width": gen.config.g_width}


def start_server(run: Path, port: int, microbatch: bool, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GANFORGE_SERVE_MICROBATCH": "1" if microbatch else "0",
           "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:  # a file, not a pipe nobody reads (a full pipe would block)
        proc = subprocess.Popen([sys.executable, "-m", "ganforge", "serve", str(run), "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).raise_for_status()
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


@dataclass
class Tally:
    """What one mode's segments add up to."""

    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    batches: int = 0
    images: int = 0

    def summary(self, clients: int) -> dict:
        ms = np.array(self.lat or [float("nan")]) * 1000
        n = max(len(self.lat), 1)
        return {"clients": clients, "requests": len(self.lat), "rps": len(self.lat) / self.seconds,
                "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                "errors": len(self.errors), "error_examples": self.errors[:3],
                "server_cpu_ms": 1000 * self.server_cpu / n,
                "client_cpu_ms": 1000 * self.client_cpu / n,
                "mean_batch": self.images / max(self.batches, 1)}


def forward_costs(run: Path, thread_counts: list[int]) -> list[tuple[int, int, float]]:
    """(threads, batch, ms per image) of the bare forward pass, in this process: what
    micro-batching and the thread count can and cannot buy."""
    from ganforge.sample import load_generator

    gen = load_generator(run)
    out = []
    before = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for batch in (1, 32):
                z = torch.randn(batch, gen.z_dim)
                gen.generate(z)
                reps = max(3, 96 // batch)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    gen.generate(z)
                    times.append(time.perf_counter() - t0)
                out.append((threads, batch, 1000 * float(np.median(times)) / batch))
    finally:
        torch.set_num_threads(before)
    return out


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client, one connection per simulated user. httpx spends
    about as much CPU per request as the server does (measured: ~4 ms), so with the clients on
    the same two cores it would mostly measure itself; this one spends a fraction of that."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          "Content-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                       (line.partition(":") for line in head[1:] if line))
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(head[0].split()[1]), headers.get("content-type", ""), data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class HttpxConnection:
    """The same interface over a shared httpx.AsyncClient (--client httpx)."""

    def __init__(self, client: httpx.AsyncClient):
        self.client = client

    async def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        r = await self.client.post(path, content=body,
                                   headers={"Content-Type": "application/json"})
        return r.status_code, r.headers.get("content-type", ""), r.content

    async def close(self) -> None:
        pass


async def client_loop(conn: RawConnection | HttpxConnection, until: float,
                      bodies: list[bytes], start: int, tally: Tally) -> None:
    i = start
    while time.perf_counter() < until:
        body, i = bodies[i % len(bodies)], i + 1
        t0 = time.perf_counter()
        try:
            status, ctype, data = await conn.post("/api/image", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError) as e:
            tally.errors.append(repr(e))
            await conn.close()
            continue
        if status != 200 or ctype != "image/png" or not data.startswith(b"\x89PNG"):
            tally.errors.append(f"{status} {data[:100]!r}")
            continue
        tally.lat.append(time.perf_counter() - t0)


async def slice_(base: str, kind: str, clients: int, until: float, bodies: list[bytes],
                 tally: Tally) -> None:
    """`clients` users hammering one server until `until`."""
    host, port = base.removeprefix("http://").split(":")
    pool = None
    if kind == "httpx":
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        pool = httpx.AsyncClient(base_url=base, limits=limits, timeout=120)
        conns: list = [HttpxConnection(pool)] * clients
    else:
        conns = [RawConnection(host, int(port)) for _ in range(clients)]
    try:
        await asyncio.gather(*(client_loop(c, until, bodies, 97 * i, tally)
                               for i, c in enumerate(conns)))
    finally:
        for c in set(conns):
            await c.close()
        if pool is not None:
            await pool.aclose()


async def measure(servers: dict[bool, tuple[subprocess.Popen, str]], clients: int,
                  seconds: float, segments: int, z_dim: int, kind: str) -> dict[bool, dict]:
    """Alternate the modes in `segments` slices (on, off, off, on, ...) so that the load of
    other jobs on the machine drifts over both alike; each gets `seconds` in all. Every slice
    opens fresh connections (an idle kept-alive one would be closed by the server's 5 s
    keep-alive timeout while the other mode runs)."""
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"z": rng.standard_normal(z_dim).round(4).tolist()}).encode()
              for _ in range(512)]
    tallies = {mode: Tally() for mode in servers}
    for _, base in servers.values():  # warm-up: first forward passes, not counted
        await slice_(base, kind, clients, time.perf_counter() + 1.0, bodies, Tally())
    for k in range(segments):
        for mode in (list(servers) if k % 2 == 0 else list(servers)[::-1]):
            (proc, base), t = servers[mode], tallies[mode]
            before = httpx.get(f"{base}/api/info").json()["batching"]
            cpu0, own0, t0 = server_cpu(proc.pid), time.process_time(), time.perf_counter()
            await slice_(base, kind, clients, t0 + seconds / segments, bodies, t)
            t.seconds += time.perf_counter() - t0
            t.server_cpu += server_cpu(proc.pid) - cpu0
            t.client_cpu += time.process_time() - own0
            after = httpx.get(f"{base}/api/info").json()["batching"]
            t.batches += int(after["batches"] - before["batches"])
            t.images += int(after["images"] - before["images"])
    return {mode: t.summary(clients) for mode, t in tallies.items()}


def machine(server_threads: int) -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    return {"cpu": model.group(1).strip() if model else platform.processor(),
            "nproc": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(),
            "server_threads": server_threads}


def busy(before: str, after: str, nproc: int) -> str:
    loads = [float(x) for text in (before, after)
             for x in re.findall(r"load average: ([\d.]+)", text)]
    if loads and max(loads) >= 0.5:
        return (f"Other engineers' jobs were running on these {nproc} cores during the run "
                "(load average up to {:.1f}); the alternating slices spread that load over both "
                "modes, but absolute figures carry its noise.".format(max(loads)))
    return "The machine was otherwise idle."


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


CLIENTS = {
    "raw": "Clients are minimal asyncio HTTP/1.1 keep-alive clients, one connection each "
           "(`--client raw`; httpx costs about as much CPU per request as the server, ~4 ms "
           "here, so on two shared cores it would mostly measure itself)",
    "httpx": "Clients are tasks sharing one httpx.AsyncClient (`--client httpx`)",
}


def section(res: dict, m: dict, g: dict, costs: list, cmd: str, before: str, after: str,
            args: argparse.Namespace) -> str:
    def row(mode: bool, x: dict) -> str:
        return (f"| {'on' if mode else 'off'} | {x['clients']} | {x['requests']} | "
                f"{x['rps']:.1f} | {x['p50']:.1f} | {x['p99']:.1f} | {x['errors']} | "
                f"{x['mean_batch']:.1f} | {x['server_cpu_ms']:.1f} | {x['client_cpu_ms']:.1f} |")

    one, many = res["one"], res["many"]
    speedup = many[True]["rps"] / max(many[False]["rps"], 1e-9)
    cpu_saved = 1 - many[True]["server_cpu_ms"] / max(many[False]["server_cpu_ms"], 1e-9)
    return "\n".join([
        START,
        "## Web explorer (`ganforge serve`)",
        "",
        f"Date {datetime.date.today().isoformat()}; CPU: {m['cpu']}, `nproc` = {m['nproc']}; "
        f"torch {m['torch']} (CPU), Python {m['python']}.  ",
        f"Command: `{cmd}`",
        "",
        f"Model: a {g['size']}x{g['size']} gray DCGAN generator at the default widths "
        f"(`variant=dcgan`, `z_dim={g['z_dim']}`, `g_width={g['g_width']}`, "
        f"{g['params_m']:.1f} M parameters), trained for {TRAIN['steps']} steps on "
        f"{args.limit} Fashion-MNIST images resized to 64 px (a real checkpoint; the speed "
        "does not depend on the weights).",
        "",
        "Method: two real `ganforge serve` processes on 127.0.0.1, one with micro-batching on "
        "and one with it off (`GANFORGE_SERVE_MICROBATCH=0`), each with "
        f"{m['server_threads']} torch thread{'s' if m['server_threads'] > 1 else ''} (the "
        "server's default: torch's count less the core left to the event loop). "
        f"{CLIENTS[args.client]} in the benchmark process on the same CPU, each POSTing a "
        "random z to `/api/image` (a 64x64 PNG comes back) as soon as its previous image "
        "arrives. The two servers are measured in alternating slices "
        f"({args.segments} per mode, on/off order swapped each round) so that other jobs' "
        f"load falls on both alike: 1 client for {args.single_seconds:g} s and "
        f"{args.clients} clients for {args.seconds:g} s per mode, after a 1 s warm-up. "
        "Server CPU is the server process's user+system time per request (/proc), client "
        "CPU the benchmark process's.",
        "",
        "| micro-batching | clients | requests | req/s | p50 ms | p99 ms | errors | "
        "images per forward pass | server CPU ms/request | client CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row(True, one[True]), row(False, one[False]),
        row(True, many[True]), row(False, many[False]),
        "",
        f"At {args.clients} clients micro-batching gives {speedup:.2f}x the requests/s of one "
        f"forward pass per request and uses {100 * cpu_saved:.0f}% less server CPU per "
        f"request, at {many[False]['p50'] / max(many[True]['p50'], 1e-9):.1f}x lower median "
        "latency. A lone client pays no collection window (the 4 ms window is waited out only "
        "when the traffic is concurrent), only the hand-off through the batcher's queue: "
        f"p50 {one[True]['p50']:.1f} ms with it, {one[False]['p50']:.1f} ms without.",
        "",
        "The generator's forward pass alone (`generate`, uint8 out, in the benchmark process, "
        "median of repeats), which is what batching and the thread count act on:",
        "",
        "| torch threads | batch | ms per image |",
        "|---|---|---|",
        *[f"| {th} | {b} | {ms:.2f} |" for th, b, ms in costs],
        "",
        f"Load before: `{before}`; after: `{after}`. {busy(before, after, m['nproc'])}",
        END,
    ])


def write_section(text: str) -> None:
    from ganforge import io

    # Re-read right before writing: another benchmark writes its own section of this file.
    old = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in old and END in old:
        new = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    io.write_text(DOC, new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="duration at --clients")
    p.add_argument("--single-seconds", type=float, default=10.0, help="duration at 1 client")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--limit", type=int, default=1000, help="Fashion-MNIST images to prepare")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="raw: a minimal keep-alive HTTP/1.1 client; httpx: httpx.AsyncClient")
    p.add_argument("--segments", type=int, default=4, help="alternating slices per mode")
    p.add_argument("--port", type=int, default=8667, help="this port and the next")
    p.add_argument("--no-doc", action="store_true", help="print only; leave the doc alone")
    args = p.parse_args()
    cmd = "python bench/bench_serve.py " + " ".join(sys.argv[1:])
    from ganforge.serve.app import default_threads

    # read before training changes this process's thread count
    default_torch_threads = torch.get_num_threads()
    server_threads = default_threads()  # what the server will pick
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        t = time.monotonic()
        run = make_checkpoint(work, args.limit)
        print(f"checkpoint ready in {time.monotonic() - t:.0f} s: {run}", flush=True)
        logs = {mode: work / f"server-microbatch-{int(mode)}.log" for mode in (True, False)}
        servers = {mode: start_server(run, args.port + i, mode, logs[mode])
                   for i, mode in enumerate((True, False))}
        try:
            bases = {mode: (proc, f"http://127.0.0.1:{args.port + i}")
                     for i, (mode, proc) in enumerate(servers.items())}
            z_dim = generator_facts(run)["z_dim"]
            before = uptime()
            res = {"one": asyncio.run(measure(bases, 1, args.single_seconds, args.segments,
                                              z_dim, args.client)),
                   "many": asyncio.run(measure(bases, args.clients, args.seconds,
                                               args.segments, z_dim, args.client))}
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
        for key in ("one", "many"):
            for mode, r in res[key].items():
                print(f"microbatch={'on' if mode else 'off'} clients={r['clients']}: "
                      f"{r['rps']:.1f} req/s p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms "
                      f"errors {r['errors']} {r['error_examples']} batch {r['mean_batch']:.2f} "
                      f"server cpu {r['server_cpu_ms']:.2f} ms/req client cpu "
                      f"{r['client_cpu_ms']:.2f} ms/req", flush=True)
        if any(r["errors"] for key in res for r in res[key].values()):
            for mode, log in logs.items():
                print(f"server log (microbatch={'on' if mode else 'off'}):\n{log.read_text()}")
        costs = forward_costs(run, sorted({1, default_torch_threads}))
        after = uptime()
        text = section(res, machine(server_threads), generator_facts(run), costs, cmd.strip(),
                       before, after, args)
        print(text)
        if not args.no_doc:
            write_section(text)
            print(f"wrote its section of {DOC}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
