"""Attacks on the streamable HTTP server (issue 9 #2, #5, #17): each reproduces the attack against a real
``fal-mcp serve --transport http`` subprocess and asserts it no longer works.

- #2: made-up keys sent to a ``--per-user`` server must not grow it (memory, per-key time) — they are
  refused unless shaped like a fal key, and what is kept for the ones that are is bounded.
- #5: a session answers only the key that opened it: another key gets 404 for calls, cancellations
  and DELETE, exactly like an unknown session.
- #17: a token of spaces, or ``--per-user`` off loopback without a token, is refused at start-up.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from fal_mcp.config import ConfigError
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import plausible_fal_key
from fal_mcp.server.http import MAX_SESSIONS, check_exposure
from tests.server.test_transports import ALICE_KEY, BOB_KEY, HttpServer, key_id_of, server_env

pytestmark = pytest.mark.anyio

PROTOCOL = "2025-11-25"  # the era with Mcp-Session-Id sessions
ACCEPT = "application/json, text/event-stream"


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


class RawSession:
    """One MCP session spoken by hand over HTTP, so a test can replay its id with someone else's key."""

    def __init__(self, http: httpx2.AsyncClient, url: str, key: str) -> None:
        self.http, self.url, self.key = http, url, key
        self.session_id = ""

    def headers(self, key: str | None = None, session_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key or self.key}", "Accept": ACCEPT, "MCP-Protocol-Version": PROTOCOL}
        sid = self.session_id if session_id is None else session_id
        if sid:
            headers["Mcp-Session-Id"] = sid
        return headers

    async def open(self) -> None:
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        response = await self.http.post(self.url, json=body, headers=self.headers(session_id=""))
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.http.post(self.url, json=initialized, headers=self.headers())).status_code == 202

    def tool_call(self, request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        params = {"name": name, "arguments": arguments, "_meta": {"progressToken": f"p{request_id}"}}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    async def post(self, body: dict[str, Any], *, key: str | None = None) -> httpx2.Response:
        return await self.http.post(self.url, json=body, headers=self.headers(key))

    async def delete(self, *, key: str | None = None) -> httpx2.Response:
        return await self.http.delete(self.url, headers=self.headers(key))


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    from fal_mcp.emulator.config import EmulatorConfig

    with EmulatorServer(EmulatorConfig(time_scale=0.02, concurrency_per_app=4)) as server:
        yield server


@pytest.fixture(scope="module")
def per_user_server(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    tmp = tmp_path_factory.mktemp("http-per-user-hardening")
    server = HttpServer(tmp, ["--per-user"], server_env(tmp, FAL_MCP_BASE_URL=emulator.base_url))
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


# -- #5: sessions are bound to the key that opened them ------------------------------------------------


async def test_another_key_cannot_call_cancel_or_delete_in_someone_elses_session(
    per_user_server: HttpServer, emulator: EmulatorServer, http: httpx2.AsyncClient
) -> None:
    alice = RawSession(http, per_user_server.url, ALICE_KEY)
    await alice.open()
    first_event = anyio.Event()
    alice_result: list[dict[str, Any]] = []

    async def alices_long_call() -> None:
        # 150 emulated seconds: 3 s of real time, so Bob's attempts land while it runs.
        data = {"seconds": 150, "steps": 15, "label": "alice-long"}
        body = alice.tool_call(7, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        async with http.stream("POST", alice.url, json=body, headers=alice.headers()) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("method") == "notifications/progress" and "submitting" not in str(message):
                    first_event.set()  # submitted and being followed: in flight
                if message.get("id") == 7:
                    alice_result.append(message)
                    first_event.set()
                    return

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(alices_long_call)
            await first_event.wait()
            assert not alice_result, "the call finished before the attacks: make it longer"

            # Bob knows Alice's session id and has his own (valid) key.
            steal = alice.tool_call(8, "jobs_list", {})
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            called = await alice.post(steal, key=BOB_KEY)
            cancelled = await alice.post(cancel, key=BOB_KEY)
            deleted = await alice.delete(key=BOB_KEY)
            for response in (called, cancelled, deleted):
                assert response.status_code == 404, (response.status_code, response.text)
                assert "Session not found" in response.text
                assert "alice" not in response.text.lower()

    # Alice's call was neither cancelled nor cut off, and her session still serves her.
    assert alice_result and "error" not in alice_result[0], alice_result
    result = alice_result[0]["result"]
    assert not result.get("isError"), result
    job = result["structuredContent"]
    assert job["status"] == "COMPLETED"
    assert key_id_of(emulator, job["request_id"]) == "alice-key-id"
    record = emulator.state.queue.get(job["request_id"])
    assert record is not None and not record.cancel_requested
    listed = await alice.post(alice.tool_call(9, "jobs_list", {}))
    assert listed.status_code == 200 and '"isError":false' in listed.text.replace(" ", "")
    # The owner herself may end it (the 404s above were about the key, not the request).
    assert (await alice.delete()).status_code == 200
    assert (await alice.post(alice.tool_call(10, "jobs_list", {}))).status_code == 404


async def test_a_session_opened_with_one_key_is_not_reachable_through_x_fal_key_either(
    per_user_server: HttpServer, http: httpx2.AsyncClient
) -> None:
    """The binding is to the key, whichever header carries it: Alice by X-Fal-Key is still Alice."""
    alice = RawSession(http, per_user_server.url, ALICE_KEY)
    await alice.open()
    as_header = {**alice.headers(), "X-Fal-Key": ALICE_KEY}
    as_header.pop("Authorization")
    same = await http.post(alice.url, json=alice.tool_call(1, "jobs_list", {}), headers=as_header)
    assert same.status_code == 200
    as_header["X-Fal-Key"] = BOB_KEY
    other = await http.post(alice.url, json=alice.tool_call(2, "jobs_list", {}), headers=as_header)
    assert other.status_code == 404


# -- #2: made-up keys cost nothing lasting ------------------------------------------------------------


def bogus_keys(count: int) -> list[str]:
    """Distinct made-up keys: half shaped like real fal keys (they get a session), half not."""
    shapes = [
        lambda: secrets.token_hex(24),  # no key id
        lambda: f"{secrets.token_hex(2)}:{secrets.token_hex(20)}",  # id too short
        lambda: f"{uuid.uuid4()}:{secrets.token_hex(16)}!",  # outside fal's alphabet
        lambda: "x" * 300 + ":" + secrets.token_hex(300),  # far too long
        lambda: f"{secrets.token_hex(6)}:{secrets.token_hex(8)}\t{secrets.token_hex(4)}",  # a tab inside
    ]
    keys = []
    for i in range(count):
        keys.append(f"{uuid.uuid4()}:{secrets.token_hex(16)}" if i % 2 == 0 else shapes[i % len(shapes)]())
    assert len(set(keys)) == count
    return keys


async def _feed(http: httpx2.AsyncClient, url: str, key: str) -> float:
    """What a client does with one key: open a session, call a tool that takes it to fal, close it.

    The call asks fal (the emulator, which takes any key) about a job it never had: the key builds a
    per-user client, travels to fal and comes back in a ``not_found`` error that must not show it.
    Returns the seconds it took; a key that is not fal-shaped must be refused at the door (401).
    """
    started = time.perf_counter()
    session = RawSession(http, url, key)
    if not plausible_fal_key(key):
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
        response = await http.post(url, json=body, headers=session.headers(session_id=""))
        assert response.status_code == 401, response.text
        assert key not in response.text
        return time.perf_counter() - started
    await session.open()
    args = {"request_id": str(uuid.uuid4()), "endpoint_id": "fal-ai/flux/dev"}
    response = await session.post(session.tool_call(1, "queue_status", args))
    assert response.status_code == 200, response.text
    answer = sse_messages(response.text)[-1]
    assert answer["id"] == 1 and answer["result"]["isError"], answer
    assert "[not_found]" in answer["result"]["content"][0]["text"], answer
    assert key.split(":")[1] not in response.text
    assert (await session.delete()).status_code == 200
    return time.perf_counter() - started


async def test_a_thousand_made_up_keys_neither_grow_the_server_nor_slow_it_down(
    per_user_server: HttpServer, http: httpx2.AsyncClient
) -> None:
    """Before: every key was registered for redaction forever, recompiling one regex of them all
    (400 keys: +120 MiB, 30 -> 115 ms per key). Now: < 40 MiB for 1,000 and the last as fast as the first."""
    pid = per_user_server.process.pid
    for key in bogus_keys(20):  # warm up: imports, pools, the ledger
        await _feed(http, per_user_server.url, key)
    before = rss_mib(pid)
    keys = bogus_keys(1000)
    times: list[float] = []
    cpu: dict[int, float] = {}  # the server's CPU seconds at a few points: wall time is noisy on a shared machine
    with anyio.fail_after(240):
        for index, key in enumerate(keys):
            if index in (0, 200, 800):
                cpu[index] = cpu_seconds(pid)
            times.append(await _feed(http, per_user_server.url, key))
    cpu[1000] = cpu_seconds(pid)
    grown = rss_mib(pid) - before
    fal_shaped = [t for key, t in zip(keys, times, strict=True) if plausible_fal_key(key)]
    first, last = statistics.median(fal_shaped[:100]), statistics.median(fal_shaped[-100:])
    cpu_first, cpu_last = cpu[200] - cpu[0], cpu[1000] - cpu[800]
    print(
        f"\nRSS +{grown:.1f} MiB over 1000 keys; median per fal-shaped key first 100 {first * 1000:.1f} ms, "
        f"last 100 {last * 1000:.1f} ms; server CPU first 200 keys {cpu_first:.2f} s, last 200 {cpu_last:.2f} s"
    )
    assert grown < 40, f"RSS grew {grown:.1f} MiB"
    # The server does no more work for the last keys than for the first (before: 4-20x more per key) ...
    assert cpu_last < cpu_first * 1.5 + 0.2, (cpu_first, cpu_last)
    # ... and answers about as fast (generous: other processes share the machine).
    assert last < first * 3 + 0.020, (first, last)
    for key in keys[:50]:
        assert key.split(":")[-1] not in per_user_server.stderr


async def test_made_up_keys_that_never_close_their_sessions_are_bounded_too(
    emulator: EmulatorServer, http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    """The attacker's way: 1,000 made-up fal-shaped keys, each opening a session, calling a tool that takes the
    key to fal, and never closing it. Sessions are capped (MAX_SESSIONS; the rest get 503 at once), so the
    server grows by < 40 MiB and serves the last accepted key as fast as the first (before: 1,000 open sessions
    took +49 MiB). Once the attacker's sessions end, a real caller gets in."""
    server = HttpServer(tmp_path, ["--per-user"], server_env(tmp_path, FAL_MCP_BASE_URL=emulator.base_url))
    try:
        pid = server.process.pid
        for key in bogus_keys(40)[::2]:  # warm up: imports, pools, the ledger
            await _feed(http, server.url, key)
        before = rss_mib(pid)
        opened: list[RawSession] = []
        accepted: list[float] = []
        refused = 0
        with anyio.fail_after(240):
            for _ in range(1000):
                session = RawSession(http, server.url, f"{uuid.uuid4()}:{secrets.token_hex(16)}")
                started = time.perf_counter()
                params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
                body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
                response = await http.post(server.url, json=body, headers=session.headers(session_id=""))
                if response.status_code == 503:
                    assert "Too many open sessions" in response.text
                    refused += 1
                    continue
                assert response.status_code == 200, response.text
                session.session_id = response.headers["mcp-session-id"]
                args = {"request_id": str(uuid.uuid4()), "endpoint_id": "fal-ai/flux/dev"}
                called = await session.post(session.tool_call(1, "queue_status", args))
                assert called.status_code == 200 and "not_found" in called.text, called.text
                accepted.append(time.perf_counter() - started)
                opened.append(session)
        grown = rss_mib(pid) - before
        first, last = statistics.median(accepted[:100]), statistics.median(accepted[-100:])
        print(
            f"\n{len(opened)} sessions kept open, {refused} refused: RSS +{grown:.1f} MiB; "
            f"first {first * 1000:.1f} ms, last {last * 1000:.1f} ms"
        )
        assert len(opened) == MAX_SESSIONS and refused == 1000 - MAX_SESSIONS, (len(opened), refused)
        assert grown < 40, f"RSS grew {grown:.1f} MiB"
        assert last < first * 3 + 0.020, (first, last)
        for session in opened:  # the attacker's sessions end (closed, or idle for 30 minutes) ...
            assert (await session.delete()).status_code == 200
        alice = RawSession(http, server.url, ALICE_KEY)  # ... and a real caller gets in again
        await alice.open()
        assert (await alice.post(alice.tool_call(1, "jobs_list", {}))).status_code == 200
    finally:
        server.stop()


def test_only_fal_shaped_keys_are_plausible() -> None:
    assert plausible_fal_key("4f2c1d0e-aaaa-bbbb-cccc-1234567890ab:9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b")
    assert plausible_fal_key(ALICE_KEY) and plausible_fal_key(BOB_KEY)
    for bad in (
        "",
        "no-colon-at-all-0123456789",
        "short:9e8d7c6b5a4f3e2d1c0b",
        "key-id-1:short",
        "key-id-1:secret-0123456789\nX",
        "key-id-1:secret-01234567\x00",
        "key-id-1 :secret-0123456789",
        "kéy-id-12:secret-0123456789",
        "a" * 100 + ":" + "b" * 500,
    ):
        assert not plausible_fal_key(bad), bad


# -- #17 and the per-user exposure rule: refused at start-up -----------------------------------------


def _start(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fal_mcp", "serve", "--transport", "http", "--port", "0", *args]
    return subprocess.run(
        command, env=server_env(tmp_path, **env), cwd=tmp_path, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("token", [" " * 24, "\t" * 20, "a-long-token with-a-space-in-it"])
def test_a_blank_or_spaced_token_is_refused_at_start_up(tmp_path: Path, token: str) -> None:
    """Before: a token of spaces started a server that then rejected every request."""
    done = _start(tmp_path, [], FAL_KEY="server-key-id:server-key-secret-8d2f41c0", FAL_MCP_HTTP_TOKEN=token)
    assert done.returncode == 2, done.stderr
    assert "FAL_MCP_HTTP_TOKEN" in done.stderr and ("blank" in done.stderr or "without spaces" in done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_per_user_off_loopback_needs_a_token(tmp_path: Path) -> None:
    done = _start(tmp_path, ["--per-user", "--host", "0.0.0.0"])
    assert done.returncode == 2, done.stderr
    assert "--per-user" in done.stderr and "FAL_MCP_HTTP_TOKEN" in done.stderr and "Traceback" not in done.stderr
    check_exposure("0.0.0.0", token="t" * 32, per_user=True)  # with a token it may
    check_exposure("127.0.0.1", token=None, per_user=True)  # and on loopback without one
    with pytest.raises(ConfigError):
        check_exposure("::", token=None, per_user=True)


# -- redaction that does not grow per caller ----------------------------------------------------------


def test_caller_secrets_are_masked_from_a_bounded_set_without_a_regex_per_caller() -> None:
    from fal_mcp import redact

    saved = (set(redact._secrets), redact._pattern, dict(redact._caller_parts))
    redact._caller_parts.clear()
    try:
        keys = [f"{uuid.uuid4()}:{secrets.token_hex(16)}" for _ in range(redact.MAX_CALLER_SECRETS)]
        compiled_before = redact._pattern
        for key in keys:
            redact.remember_caller_secret(key)
        assert redact.caller_secret_count() == redact.MAX_CALLER_SECRETS  # two parts per key, the oldest dropped
        assert redact._pattern is compiled_before  # no pattern rebuilt for callers
        newest = keys[-1]
        key_id, secret = newest.split(":")
        text = f"failed for {newest}; secret alone: '{secret}', id={key_id}, in json {json.dumps({'k': newest})}"
        masked = redact.redact(text)
        assert secret not in masked and key_id not in masked, masked
        # An opaque caller secret (not fal's uuid:hex shape) is masked by membership, not by its shape.
        redact.remember_caller_secret("caller-id-0001:opaque_secret_value_123")
        assert "opaque_secret_value_123" not in redact.redact("x opaque_secret_value_123 y")
        assert redact.redact("a harmless sentence with ordinary words") == "a harmless sentence with ordinary words"
        # A "key" of ordinary words (plausible in shape) keeps nothing that could mask other callers' text.
        count = redact.caller_secret_count()
        redact.remember_caller_secret("invalid_argument:submit_outcome_unknown")
        assert redact.caller_secret_count() == count
        assert redact.redact("[invalid_argument] submit_outcome_unknown") == "[invalid_argument] submit_outcome_unknown"
        # Any fal-shaped key is masked even if never registered (e.g. the oldest, evicted one).
        assert keys[0] not in redact.redact(f"old {keys[0]}")
    finally:  # leave the process's secrets as they were (other tests' credentials stay registered)
        redact.forget_secrets()
        redact._secrets.update(saved[0])
        redact._pattern = saved[1]
        redact._caller_parts.update(saved[2])


async def test_a_callers_key_cannot_mask_words_in_other_callers_errors(
    per_user_server: HttpServer, http: httpx2.AsyncClient
) -> None:
    """Per-caller secrets are masked wherever they appear, so a caller who picks a "key" made of ordinary words
    (fal-shaped: ``<8+ chars>:<16+ chars>``) must not thereby blank those words out of everyone else's errors,
    logs and ledger: only secret-looking parts of a caller's key are remembered."""
    mallory = RawSession(http, per_user_server.url, "invalid_argument:submit_outcome_unknown")
    await mallory.open()
    alice = RawSession(http, per_user_server.url, ALICE_KEY)
    await alice.open()
    response = await alice.post(alice.tool_call(1, "jobs_list", {"limit": 9999}))
    answer = sse_messages(response.text)[-1]["result"]
    assert answer["isError"], answer
    assert "[invalid_argument]" in answer["content"][0]["text"], answer
    assert answer["_meta"]["fal-mcp/error"]["kind"] == "invalid_argument", answer["_meta"]
    assert "[REDACTED]" not in response.text
