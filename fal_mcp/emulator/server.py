"""Serving the emulator: in a background thread (tests, ``--local``, demo) or in the foreground (CLI)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import uvicorn

from fal_mcp.emulator.app import create_app
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.faults import FAULTS_ENV, FaultConfig
from fal_mcp.emulator.state import EmulatorState
from fal_mcp.emulator.tls import TlsFiles, ensure_tls
from fal_mcp.fal.hosts import BASE_URL_ENV
from fal_mcp.log import get_logger

log = get_logger(__name__)

DEFAULT_PORT = 8790
START_TIMEOUT_SECONDS = 15.0


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so port 0 gives us the real port up front.

    ``proto=IPPROTO_TCP`` matters: asyncio only sets TCP_NODELAY on accepted sockets that say so, and
    without it every keep-alive response stalls ~40 ms (Nagle against delayed ACKs).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, tls: TlsFiles | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",  # the faults reach the connection through h11's protocol (see faults._drop_connection)
        ws="wsproto",
        lifespan="on",
        log_config=None,  # keep our structlog setup
        access_log=False,
        timeout_graceful_shutdown=1,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class EmulatorServer:
    """A running emulator on loopback, in its own thread and event loop. ``with EmulatorServer(...) as server:``."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: str | Path | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self.tls = ensure_tls(tls_dir) if tls_dir is not None else None
        self.app = create_app(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def state(self) -> EmulatorState:
        """The emulator's live state (faults, submissions, files…); touch it only between requests."""
        return self.app.state.emulator

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` — the value for ``FAL_MCP_BASE_URL``."""
        return _origin("https" if self.tls else "http", self.host, self.port)

    def start(self) -> EmulatorServer:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = server = uvicorn.Server(_uvicorn_config(self.app, self.tls))

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"fal-emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start on {self.base_url}: {self._error!r}")
            time.sleep(0.005)
        log.info("emulator started", base_url=self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def client_env(base_url: str, tls: TlsFiles | None = None) -> dict[str, str]:
    """The environment variables that point fal-mcp and fal's official clients at an emulator."""
    hostport = base_url.split("://", 1)[1]
    env = {BASE_URL_ENV: base_url, "FAL_QUEUE_RUN_HOST": f"{hostport}/queue", "FAL_RUN_HOST": f"{hostport}/run"}
    if tls is not None:
        env["SSL_CERT_FILE"] = str(tls.ca_cert)
        env["NODE_EXTRA_CA_CERTS"] = str(tls.ca_cert)
    return env


async def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls_dir: str | Path | None = None,
    config: EmulatorConfig | None = None,
) -> None:
    """Serve in the foreground until cancelled or interrupted."""
    tls = ensure_tls(tls_dir) if tls_dir is not None else None
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    base_url = _origin("https" if tls else "http", host, actual_port)
    exports = " ".join(f"{name}={value}" for name, value in client_env(base_url, tls).items())
    log.info("fal emulator listening", base_url=base_url, point_clients_here=exports)
    server = uvicorn.Server(_uvicorn_config(create_app(config), tls))
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """``fal-mcp emulator [--host] [--port] [--tls-dir] [--time-scale] [--faults] [--concurrency]``."""
    parser = subparsers.add_parser("emulator", help="run the local fal emulator (fal's wire protocol on loopback)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--tls-dir", help="serve https with a CA + certificate created (once) in this directory")
    parser.add_argument("--time-scale", type=float, help="multiply simulated model times (e.g. 0.1 = 10x faster)")
    parser.add_argument("--concurrency", type=int, help="runners per app (default 2)")
    parser.add_argument(
        "--faults", help=f'fault injection spec, e.g. "rate=0.2,kinds=429,503,drop,slow,sse_break" (or ${FAULTS_ENV})'
    )
    return parser


def run_cli(args: argparse.Namespace) -> int:
    config = EmulatorConfig.from_env(time_scale=args.time_scale, concurrency_per_app=args.concurrency)
    if args.faults:
        config.faults = FaultConfig.parse(args.faults)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop it
        anyio.run(serve, args.host, args.port, args.tls_dir, config)
    return 0
