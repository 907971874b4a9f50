"""One emulator per conformance module (fresh queue, one runner per app), over https or plain http."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from fal_mcp.emulator.server import EmulatorServer
from tests.conformance.scenarios import CONFIG


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """https/wss, with its own CA: what fal_client (https-only) and our client talk to."""
    with EmulatorServer(replace(CONFIG), tls_dir=tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture(scope="module")
def http_emulator() -> Iterator[EmulatorServer]:
    """Plain http: enough for the JS client, which reaches everything through the emulator's proxy route."""
    with EmulatorServer(replace(CONFIG)) as server:
        yield server
