"""Emulators on loopback for the emulator tests: one shared, plus a factory for fresh ones with custom config."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fal_mcp.emulator.server import EmulatorServer
from tests.emulators import MakeEmulator, emulator_factory, shared_emulator

AUTH = {"Authorization": "Key test-key-id:test-key-secret"}


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator()


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """``make_emulator(concurrency_per_app=1, …)``: a fresh emulator with FAST plus these overrides."""
    yield from emulator_factory()


def client_for(server: EmulatorServer, **kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=10.0, **kwargs)


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(emulator) as http:
        yield http


class Receiver:
    """A tiny HTTP server on loopback that records the JSON POSTed to it (webhook target)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.arrived = threading.Event()

        async def record(request: Request) -> JSONResponse:
            self.received.append((dict(request.headers), await request.json()))
            self.arrived.set()
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/hook", record, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


async def submit(http: httpx2.AsyncClient, endpoint_id: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = await http.post(f"/queue/{endpoint_id}", json=data, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_completed(http: httpx2.AsyncClient, status_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll like fal_client (but faster) until COMPLETED; returns the final status body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await http.get(status_url, params={"logs": "1"})
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        await anyio.sleep(0.005)
    raise AssertionError(f"not completed within {timeout}s: {status_url}")
