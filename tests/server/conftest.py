"""Server fixtures: a session emulator on loopback and an MCP server pointed at it, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fal_mcp.config import Settings
from fal_mcp.emulator.embedded import EmbeddedEmulator
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.server.app import FalMCPServer, build_server
from tests.emulators import shared_emulator

TEST_KEY = "test-key-id:test-key-secret-0123456789"


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator(concurrency_per_app=4)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's working directory (its default file root)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def settings(emulator: EmulatorServer, tmp_path: Path, workdir: Path) -> Settings:
    return Settings(
        hosts=FalHosts.for_base_url(emulator.base_url),
        ledger_path=tmp_path / "state" / "ledger.sqlite3",
        cache_dir=tmp_path / "cache",
        wait_seconds=20,
        heartbeat_seconds=0.25,
        allow_private_urls=False,
    )


@pytest.fixture
def server(settings: Settings) -> FalMCPServer:
    return build_server(settings, credentials=credentials_from_key(TEST_KEY, source="test"))


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both MCP protocol eras: 2026-07-28 (auto) and the 2025-11-25 handshake (legacy)."""
    return request.param


def owner_of(settings: Settings) -> str:
    """The stdio caller's ledger owner for a server on ``settings`` (namespaced by the fal it talks to)."""
    from fal_mcp.server.state import LOCAL_OWNER, ledger_owner

    return ledger_owner(LOCAL_OWNER, settings.hosts)


def make_server(settings: Settings, *, local_fal: EmbeddedEmulator | None = None, **updates: object) -> FalMCPServer:
    """A server with some settings changed, using the test key."""
    changed = settings.model_copy(update=updates)
    return build_server(changed, credentials=credentials_from_key(TEST_KEY, source="test"), local_fal=local_fal)
