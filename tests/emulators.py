"""Emulators on loopback for the test suites: one config, one way to start a shared one or fresh ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer

# Fast but not instantaneous: simulated seconds x 0.02 (flux's 28 steps ~56 ms; emulator/slow seconds=10 ~0.2 s).
FAST = EmulatorConfig(time_scale=0.02, ping_interval_seconds=0.5)

MakeEmulator = Callable[..., EmulatorServer]


def shared_emulator(**overrides: Any) -> Iterator[EmulatorServer]:
    """Body of a suite's session fixture: one emulator for the suite (FAST plus ``overrides``)."""
    with EmulatorServer(replace(FAST, **overrides)) as server:
        yield server


def emulator_factory() -> Iterator[MakeEmulator]:
    """Body of a ``make_emulator`` fixture: ``make(concurrency_per_app=1, …)`` starts a fresh one, stopped after."""
    servers: list[EmulatorServer] = []

    def make(**overrides: Any) -> EmulatorServer:
        server = EmulatorServer(replace(FAST, **overrides)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
