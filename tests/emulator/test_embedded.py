"""The emulator ``fal-mcp --local`` serves against: created by the CLI, booted when a tool first asks
where fal is, stopped by the CLI after the server."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from fal_mcp.config import Settings
from fal_mcp.emulator.embedded import EmbeddedEmulator
from fal_mcp.server.app import build_server

pytestmark = pytest.mark.anyio


def _listening(base_url: str) -> bool:
    parts = urlsplit(base_url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname or "", parts.port or 0)) == 0


async def test_it_boots_once_when_first_asked_serves_fal_and_stops() -> None:
    emulator = EmbeddedEmulator(time_scale=0.01)
    try:
        urls: list[str] = []

        async def ask() -> None:
            urls.append(await emulator.base_url())

        async with anyio.create_task_group() as group:  # callers racing for it get one emulator
            for _ in range(3):
                group.start_soon(ask)
        assert len(set(urls)) == 1
        async with httpx.AsyncClient() as client:
            models = await client.get(f"{urls[0]}/platform/models", params={"limit": 1})
        assert models.status_code == 200 and models.json()["models"]
    finally:
        emulator.stop()
    assert not _listening(urls[0])
    emulator.stop()  # twice is harmless


def test_a_never_used_emulator_stops_at_once() -> None:
    EmbeddedEmulator().stop()


def test_local_settings_need_the_emulator_the_cli_starts() -> None:
    with pytest.raises(ValueError, match="local_fal"):
        build_server(Settings(local=True))
