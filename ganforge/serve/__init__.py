"""`ganforge serve`: a local web page to explore a trained generator and watch its run.

    from ganforge.serve import run_server
    run_server("runs/faces")                    # then open http://127.0.0.1:8666

`create_app` returns the FastAPI app itself (for tests and embedding).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ganforge.errors import GanforgeError

if TYPE_CHECKING:
    from fastapi import FastAPI

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MISSING = ("the web explorer needs FastAPI and uvicorn; install them with "
           "pip install 'ganforge[serve]'")


def create_app(ckpt_or_run: str | Path, device: str = "cpu", *,
               microbatch: bool | None = None, threads: int | None = None) -> FastAPI:
    """The explorer app for a checkpoint file or a run directory (see `app.create_app`)."""
    try:
        from ganforge.serve.app import create_app as _create
    except ModuleNotFoundError as e:
        raise GanforgeError(f"{MISSING} ({e})") from None
    return _create(ckpt_or_run, device, microbatch=microbatch, threads=threads)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; a clear error when the port is taken."""
    if not 0 <= port <= 65535:
        raise GanforgeError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise GanforgeError(f"cannot bind to host {host!r}: {e.strerror}") from None
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only
    # then, and without it every keep-alive response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise GanforgeError(f"cannot listen on {host}:{port} ({e.strerror}); is another "
                            "server using it? choose another with --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_server(ckpt_or_run: str | Path, host: str = "127.0.0.1", port: int = 8666,
               device: str = "cpu", microbatch: bool | None = None) -> None:
    """Serve the explorer until interrupted. Binds to 127.0.0.1 (this machine only) unless
    another host is asked for."""
    try:
        import uvicorn
    except ModuleNotFoundError as e:
        raise GanforgeError(f"{MISSING} ({e})") from None
    app = create_app(ckpt_or_run, device, microbatch=microbatch)
    sock = bind(host, port)
    gen = app.state.explorer.gen
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"ganforge explorer: {gen.path} (step {gen.step}, z_dim {gen.z_dim}, "
          f"{gen.size}px)")
    print(f"open http://{shown}:{bound_port}/   (Ctrl-C to stop)")
    if host in LOCAL_HOSTS:
        print(f"local only: bound to {host}, so other machines cannot connect")
    else:
        print(f"warning: bound to {host}, so anyone who can reach this machine on port "
              f"{bound_port} can use the explorer (it has no authentication)", file=sys.stderr)
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["bind", "create_app", "run_server"]
