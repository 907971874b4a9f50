"""Strings that cannot go into an HTTP header (issue 9 #12, #14, and #17's unreachable fal).

Before: a CR/LF/NUL in ``hint`` or in the key was only refused by the HTTP library mid-send, which looked like
a submit that may have reached fal (≈ 4.5 s of retries and history look-ups, then a misleading ``network``
error; with a bad key the ledger row stayed SUBMITTING), and the library's message carried the key (escaped)
into results, stderr and the ledger. Now such values are refused before anything is sent or recorded.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal._http import FalHTTP, fal_headers
from fal_mcp.fal.auth import credentials_from_key, resolve_credentials
from fal_mcp.fal.errors import FalConnectionError, InvalidArgumentError, NotConfiguredError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import RetryMode
from fal_mcp.server.app import FalMCPServer, build_server
from tests.server.conftest import TEST_KEY
from tests.server.helpers import call, error_of, structured, text_of
from tests.server.test_transports import server_env

pytestmark = pytest.mark.anyio

UNSAFE = ["fast\r\nX-Injected: 1", "fast\nrunner", "fast\x00", "\x1b[31mred", "snöw"]
KEY_ID, KEY_SECRET_1, KEY_SECRET_2 = "nl-key-id-0001", "first-half-6c1d0e", "second-half-9a4b27f3"
NEWLINE_KEY = f"{KEY_ID}:{KEY_SECRET_1}\n{KEY_SECRET_2}"


def total_submissions(emulator: EmulatorServer) -> int:
    return sum(emulator.state.submissions.values())


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM jobs")]


@pytest.mark.parametrize("hint", UNSAFE)
@pytest.mark.parametrize("tool", ["fal_subscribe", "queue_submit"])
async def test_a_header_unsafe_hint_is_refused_before_anything_is_sent(
    server: FalMCPServer, emulator: EmulatorServer, settings: Settings, tool: str, hint: str
) -> None:
    before = total_submissions(emulator)
    args = {"endpoint_id": "emulator/slow", "input": {"seconds": 1, "label": f"hint {hint!r}"}, "hint": hint}
    started = time.perf_counter()
    async with Client(server) as client:
        result = await call(client, tool, args)
        listed = structured(await call(client, "jobs_list", {}))
    elapsed = time.perf_counter() - started
    error = error_of(result)
    assert error["kind"] == "invalid_argument", error
    assert "hint" in error["message"] and "line break" in error["message"]
    assert elapsed < 2, f"took {elapsed:.1f}s: it must not retry or look fal's history up"
    assert total_submissions(emulator) == before
    assert listed["jobs"] == []
    assert all(row["status"] != "SUBMITTING" for row in ledger_rows(settings.ledger_path))


async def test_a_safe_hint_still_reaches_fal(server: FalMCPServer, emulator: EmulatorServer) -> None:
    args = {"endpoint_id": "emulator/slow", "input": {"seconds": 1, "label": "safe hint"}, "hint": "gpu-a100 lane-2"}
    async with Client(server) as client:
        result = await call(client, "queue_submit", args)
    assert not result.is_error, text_of(result)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "é"])
async def test_the_fal_client_refuses_unsafe_headers_without_sending(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        fal_headers(hint=bad)
    with pytest.raises(InvalidArgumentError):
        fal_headers(extra_headers={"X-Custom": bad})
    http = FalHTTP(hosts=FalHosts.for_base_url("http://127.0.0.1:9"))
    async with http:
        with pytest.raises(InvalidArgumentError):
            await http.request(
                "GET",
                http.url("queue", "x"),
                mode=RetryMode.IDEMPOTENT,
                auth="none",
                headers=fal_headers(extra_headers={"X-Custom": bad}),
            )
    assert http.requests_sent == 0


@pytest.mark.parametrize(
    "key", [NEWLINE_KEY, f"{KEY_ID}:{KEY_SECRET_1}\r{KEY_SECRET_2}", f"{KEY_ID}:{KEY_SECRET_1}\x00"]
)
def test_a_key_with_a_control_character_is_never_built(key: str) -> None:
    for make in (lambda: credentials_from_key(key), lambda: resolve_credentials({"FAL_KEY": key})):
        with pytest.raises(NotConfiguredError) as raised:
            make()
        assert KEY_SECRET_1 not in str(raised.value) and KEY_SECRET_2 not in str(raised.value)
        assert "line break" in str(raised.value)


def assert_no_key(text: str, where: str) -> None:
    escaped = json.dumps(NEWLINE_KEY)[1:-1]
    for part in (KEY_SECRET_1, KEY_SECRET_2, escaped):
        assert part not in text, f"part of the key leaked into {where}"


async def test_a_key_with_a_newline_never_leaks_and_nothing_is_submitted(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A real stdio server with such a FAL_KEY: every paid tool says how to fix it; no trace of the key anywhere."""
    before = total_submissions(emulator)
    env = server_env(tmp_path, FAL_KEY=NEWLINE_KEY, FAL_MCP_BASE_URL=emulator.base_url, FAL_MCP_LOG_LEVEL="DEBUG")
    params = StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp"], env=env, cwd=str(tmp_path))
    errlog_path = tmp_path / "stderr.log"
    calls = [
        ("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a newline key"}}),
        ("queue_submit", {"endpoint_id": "emulator/slow", "input": {"seconds": 1}}),
        ("fal_run", {"endpoint_id": "fal-ai/any-llm", "input": {"prompt": "hi"}}),
        ("jobs_list", {}),
    ]
    seen = []
    with errlog_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            for tool, arguments in calls:
                result = await call(client, tool, arguments)
                seen.append((tool, result))
    for tool, result in seen[:3]:
        error = error_of(result)
        assert error["kind"] == "not_configured" and "line break" in error["message"], (tool, error)
    for tool, result in seen:
        dumped = json.dumps(result.model_dump(mode="json"))
        assert_no_key(dumped, f"the result of {tool}")
    assert_no_key(errlog_path.read_text(), "the server's stderr")
    rows = ledger_rows(tmp_path / "ledger.sqlite3")
    assert all(row["status"] != "SUBMITTING" for row in rows)
    assert_no_key(json.dumps(rows, default=str), "the ledger")
    assert total_submissions(emulator) == before


async def test_with_fal_unreachable_subscribe_fails_fast(tmp_path: Path, workdir: Path) -> None:
    """A refused connection is an answer: fail in about a second, not ~22 s of back-off per request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connecting is refused
    settings = Settings(
        hosts=FalHosts.for_base_url(f"http://127.0.0.1:{port}"),
        ledger_path=tmp_path / "ledger.sqlite3",
        cache_dir=tmp_path / "cache",
    )
    server = build_server(settings, credentials=credentials_from_key(TEST_KEY, source="test"))
    started = time.perf_counter()
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
    elapsed = time.perf_counter() - started
    error = error_of(result)
    assert error["kind"] == "network" and "could not reach fal" in error["message"], error
    assert elapsed < 5, f"took {elapsed:.1f}s"
    rows = ledger_rows(settings.ledger_path)
    assert all(row["status"] not in ("SUBMITTING", "IN_QUEUE") for row in rows), rows


async def test_refused_connections_are_still_retried_briefly(emulator: EmulatorServer) -> None:
    """The short budget still rides out a blip: the first refused connects are retried (nothing was sent)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = FalHTTP(hosts=FalHosts.for_base_url(f"http://127.0.0.1:{port}"))
    async with http:
        with pytest.raises(FalConnectionError):
            await http.request("GET", http.url("queue", "x"), mode=RetryMode.SUBMIT, auth="none")
        assert http.requests_sent == http.retry.max_connect_attempts
        # The host is now known to be unreachable: the next request does not wait out the back-off again.
        with pytest.raises(FalConnectionError):
            await http.request("GET", http.url("queue", "y"), mode=RetryMode.SUBMIT, auth="none")
        assert http.requests_sent == http.retry.max_connect_attempts + 1


async def test_a_malformed_header_that_reaches_the_http_library_is_not_taken_for_a_lost_request(
    emulator: EmulatorServer,
) -> None:
    """Defence in depth: h11 refuses the value mid-send (connection already open). That is not a request that
    may have reached fal (no retry, no history look-up), and its message, which quotes the value, is dropped."""
    http = FalHTTP(hosts=FalHosts.for_base_url(emulator.base_url))
    async with http:
        with pytest.raises(InvalidArgumentError) as raised:
            await http.request(
                "POST",
                http.url("queue", "emulator/slow"),
                mode=RetryMode.SUBMIT,
                auth="none",
                json_body={"seconds": 1},
                headers={"X-Smuggled": "secret-value-7f3a\r\nX-Other: 1"},
            )
    assert "secret-value-7f3a" not in str(raised.value) and raised.value.__cause__ is None
    assert http.requests_sent == 1  # tried once, never retried
