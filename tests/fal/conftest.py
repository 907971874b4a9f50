"""Emulators on loopback and ``FalClient``s pointed at them, with fast retry/reconcile timings."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import ReconcilePolicy, RetryPolicy
from fal_mcp.log import configure_logging
from tests.emulators import MakeEmulator, emulator_factory, shared_emulator

TEST_KEY = "test-key-id:test-key-secret-0123456789"
FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.05, max_retry_after=0.02)
FAST_RECONCILE = ReconcilePolicy(lookups=3, delay=0.01)


def make_client(server: EmulatorServer, **overrides: Any) -> FalClient:
    """A client for ``server`` with the test key and fast retry/reconcile timings (``overrides`` win)."""
    options: dict[str, Any] = {
        "credentials": credentials_from_key(TEST_KEY, source="test"),
        "hosts": FalHosts.for_base_url(server.base_url),
        "retry": FAST_RETRY,
        "reconcile": FAST_RECONCILE,
        "timeout": 10.0,
    }
    return FalClient(**{**options, **overrides})


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator()


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """``make_emulator(concurrency_per_app=1, …)``: a fresh emulator with FAST plus these overrides."""
    yield from emulator_factory()


@pytest.fixture
async def fal(emulator: EmulatorServer) -> AsyncIterator[FalClient]:
    async with make_client(emulator) as client:
        yield client


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Everything fal-mcp logs (structlog and stdlib, DEBUG and up, JSON lines) while the test runs."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", buffer)
        configure_logging(level="DEBUG", fmt="json")  # its handler writes to the buffer from now on
    try:
        yield buffer
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
