"""The transports as a host runs them: ``fal-mcp`` in a real subprocess, over stdio and streamable HTTP.

Every byte stays on 127.0.0.1: stdio servers run ``--local`` (their own embedded emulator); HTTP servers
point at an emulator in this process, so the tests can see which key each fal request carried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from fal_mcp import __version__
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from tests.server.helpers import Progress, call, structured, text_of

pytestmark = pytest.mark.anyio

SERVER_KEY = "server-key-id:server-key-secret-8d2f41c0"
HTTP_TOKEN = "http-token-3b9e5a17c4d2f860"
ALICE_KEY = "alice-key-id:alice-secret-71c0e3b9a2"
BOB_KEY = "bob-key-id:bob-secret-4f8d26a1e5"
EXPECTED_TOOLS = {"model_search", "model_schema", "fal_subscribe", "queue_submit", "queue_status", "jobs_list"}
START_TIMEOUT = 30.0


def server_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a spawned server: ours minus every ``FAL_*`` variable, plus its own state dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env.update(
        FAL_MCP_LEDGER=str(tmp / "ledger.sqlite3"),
        FAL_MCP_CACHE_DIR=str(tmp / "cache"),
        FAL_MCP_HEARTBEAT_SECONDS="0.25",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as JSON (fails the test on the first line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- HTTP server subprocess ----------------------------------------------------------------------


class HttpServer:
    """``fal-mcp serve --transport http --port 0`` in a subprocess; its stderr read continuously.

    The URL comes from the ``http.listening`` log line the server writes once it accepts connections.
    """

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.stdout_path = tmp / "stdout.bin"
        self._stdout = self.stdout_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fal_mcp", "serve", "--transport", "http", "--port", "0", *args],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: list[str] = []
        self.url = ""
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._listening.wait(START_TIMEOUT):
            self.stop()
            raise AssertionError("the HTTP server never logged http.listening:\n" + self.stderr)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            if '"http.listening"' in line:
                self.url = json.loads(line)["url"]
                self._listening.set()

    @property
    def origin(self) -> str:
        return self.url.removesuffix("/mcp")

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()
        self._stdout.close()
        return code


@asynccontextmanager
async def http_client(url: str, mode: str = "auto", headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """An SDK client over streamable HTTP whose every request carries ``headers``."""
    async with (
        httpx2.AsyncClient(headers=headers or {}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(time_scale=0.02, concurrency_per_app=4)) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Loopback, no token, the server's own key: the default ``fal-mcp serve --transport http``."""
    tmp = tmp_path_factory.mktemp("http-open")
    server = HttpServer(tmp, [], server_env(tmp, FAL_MCP_BASE_URL=emulator.base_url, FAL_KEY=SERVER_KEY))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    tmp = tmp_path_factory.mktemp("http-token")
    env = server_env(tmp, FAL_MCP_BASE_URL=emulator.base_url, FAL_KEY=SERVER_KEY, FAL_MCP_HTTP_TOKEN=HTTP_TOKEN)
    server = HttpServer(tmp, [], env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def per_user_server(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """``--per-user`` with no server key at all: every fal call must use the caller's own key."""
    tmp = tmp_path_factory.mktemp("http-per-user")
    server = HttpServer(tmp, ["--per-user"], server_env(tmp, FAL_MCP_BASE_URL=emulator.base_url))
    yield server
    server.stop()


def key_id_of(emulator: EmulatorServer, request_id: str) -> str | None:
    """The (non-secret) key name the emulator recorded for a queued request."""
    record = emulator.state.queue.get(request_id)
    assert record is not None, request_id
    return record.key_id


# -- stdio -----------------------------------------------------------------------------------------


def stdio_params(tmp: Path) -> StdioServerParameters:
    env = server_env(tmp, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
    return StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp", "--local"], env=env, cwd=str(tmp))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_local_session_lists_searches_and_subscribes_with_progress(tmp_path: Path, mode: str) -> None:
    progress = Progress()
    async with Client(stdio_params(tmp_path), mode=mode) as client:
        assert client.server_capabilities is not None
        names = {tool.name for tool in (await client.list_tools()).tools}
        found = structured(await call(client, "model_search", {"query": "flux"}))
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": f"a red kite ({mode})", "num_inference_steps": 8}}
        result = await call(client, "fal_subscribe", args, progress)
        await progress.wait_until(lambda events: any(m == "completed" for _, _, m in events))  # may trail the result
    assert names >= EXPECTED_TOOLS
    assert "fal-ai/flux/dev" in [m["endpoint_id"] for m in found["models"]]
    assert not result.is_error, text_of(result)
    job = structured(result)
    assert job["status"] == "COMPLETED" and job["output"]["images"][0]["url"].startswith("http://127.0.0.1:")
    assert len(progress.events) >= 3, progress.events
    progress.assert_strictly_increasing()
    assert progress.messages[-1] == "completed"


async def test_stdio_stdout_carries_only_json_rpc_and_stderr_only_json_logs(tmp_path: Path) -> None:
    """Byte-level: what a host reads from stdout must be JSON-RPC lines, nothing else, ever."""
    env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        # A tool that starts the embedded emulator: real logging on stderr while stdout is in use.
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "model_search", "arguments": {}}},
    ]
    process = await anyio.open_process(
        [sys.executable, "-m", "fal_mcp", "--local"], env=env, cwd=tmp_path, stdin=subprocess.PIPE
    )
    async with process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        stdout, stderr = bytearray(), bytearray()
        reader = BufferedByteReceiveStream(process.stdout)

        async def drain(stream: Any, into: bytearray) -> None:
            async for chunk in stream:
                into.extend(chunk)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, process.stderr, stderr)
                for message in messages:
                    await process.stdin.send(json.dumps(message).encode() + b"\n")
                while True:  # read the replies a line at a time until the last one arrives
                    line = await reader.receive_until(b"\n", 10 * 1024 * 1024)
                    stdout.extend(line + b"\n")
                    if json.loads(line).get("id") == 3:
                        break
                await process.stdin.aclose()  # EOF: the server shuts down on its own
                await drain(reader, stdout)  # anything written after that counts too
                code = await process.wait()
    assert code == 0, stderr.decode()
    assert stdout.endswith(b"\n")
    replies = json_lines(stdout.decode("utf-8"))
    assert all(r.get("jsonrpc") == "2.0" for r in replies), replies
    by_id = {r["id"]: r for r in replies if "id" in r}
    assert set(by_id) == {1, 2, 3}
    assert by_id[1]["result"]["protocolVersion"] == "2025-11-25"
    assert {t["name"] for t in by_id[2]["result"]["tools"]} >= EXPECTED_TOOLS
    assert by_id[3]["result"]["isError"] is False
    logs = json_lines(stderr.decode("utf-8"))
    assert logs, "expected log lines on stderr"
    assert all({"event", "level", "timestamp"} <= set(entry) for entry in logs), logs
    assert any(entry["event"] == "local.emulator.ready" for entry in logs)


# -- streamable HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_session_subscribes_with_progress_in_both_eras(
    open_server: HttpServer, emulator: EmulatorServer, mode: str
) -> None:
    progress = Progress()
    async with http_client(open_server.url, mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        args = {
            "endpoint_id": "fal-ai/flux/dev",
            "input": {"prompt": f"a tall ship ({mode})", "num_inference_steps": 8},
        }
        result = await call(client, "fal_subscribe", args, progress)
        await progress.wait_until(lambda events: any(m == "completed" for _, _, m in events))
    assert names >= EXPECTED_TOOLS
    assert not result.is_error, text_of(result)
    job = structured(result)
    assert job["status"] == "COMPLETED"
    assert key_id_of(emulator, job["request_id"]) == "server-key-id"
    assert len(progress.events) >= 3, progress.events
    progress.assert_strictly_increasing()


async def test_http_healthz_needs_no_auth_and_stdout_stays_empty(
    open_server: HttpServer, token_server: HttpServer
) -> None:
    async with httpx2.AsyncClient() as http:
        for server in (open_server, token_server):
            response = await http.get(f"{server.origin}/healthz")
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "version": __version__}
    assert open_server.stdout_path.read_bytes() == b""
    assert json_lines(open_server.stderr)  # every log line so far is JSON


async def test_http_refuses_a_rebound_host_name(open_server: HttpServer) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 must not get in."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http:
        evil = await http.post(open_server.url, json=initialize, headers={**headers, "Host": "evil.example"})
        evil_origin = await http.post(
            open_server.url, json=initialize, headers={**headers, "Origin": "http://evil.example"}
        )
        good = await http.post(open_server.url, json=initialize, headers=headers)
    assert evil.status_code == 421
    assert evil_origin.status_code == 403
    assert good.status_code == 200


async def test_http_token_is_required_and_checked(token_server: HttpServer, emulator: EmulatorServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx2.AsyncClient() as http:
        missing = await http.post(token_server.url, json=body)
        wrong = await http.post(token_server.url, json=body, headers={"Authorization": "Bearer not-the-token-at-all"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
        assert "Authorization: Bearer" in response.json()["message"] or "token" in response.json()["message"]
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]

    async with http_client(token_server.url, headers={"Authorization": f"Bearer {HTTP_TOKEN}"}) as client:
        result = await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": {"seconds": 1}})
    assert not result.is_error, text_of(result)
    # The token only lets the caller in: fal is called with the server's own key, never the token.
    assert key_id_of(emulator, structured(result)["request_id"]) == "server-key-id"
    assert HTTP_TOKEN not in token_server.stderr


async def test_per_user_keys_never_mix_between_concurrent_callers(
    per_user_server: HttpServer, emulator: EmulatorServer
) -> None:
    """Alice (bearer, 2026 era) and Bob (X-Fal-Key, 2025 era) run at the same time on one server."""
    users = {
        "alice": ("auto", {"Authorization": f"Bearer {ALICE_KEY}"}, "alice-key-id"),
        "bob": ("legacy", {"X-Fal-Key": BOB_KEY}, "bob-key-id"),
    }
    results: dict[str, dict[str, Any]] = {}
    listed: dict[str, list[dict[str, Any]]] = {}

    async def session(name: str) -> None:
        mode, headers, _ = users[name]
        progress = Progress()
        async with http_client(per_user_server.url, mode, headers) as client:
            data = {"seconds": 20, "steps": 4, "label": name}  # 0.4 s real: the two overlap
            result = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}, progress)
            assert not result.is_error, text_of(result)
            results[name] = structured(result)
            listed[name] = structured(await call(client, "jobs_list", {"limit": 200}))["jobs"]
        assert progress.events

    async with anyio.create_task_group() as tg:
        for name in users:
            tg.start_soon(session, name)

    alice, bob = results["alice"], results["bob"]
    assert alice["status"] == bob["status"] == "COMPLETED"
    for name, result in results.items():
        assert key_id_of(emulator, result["request_id"]) == users[name][2]
    first = emulator.state.queue.get(alice["request_id"])
    second = emulator.state.queue.get(bob["request_id"])
    assert first is not None and second is not None
    assert first.started_at is not None and second.started_at is not None
    assert first.completed_at is not None and second.completed_at is not None
    assert first.started_at < second.completed_at and second.started_at < first.completed_at  # truly concurrent

    alice_ids = {job["request_id"] for job in listed["alice"]}
    bob_ids = {job["request_id"] for job in listed["bob"]}
    assert alice["request_id"] in alice_ids and bob["request_id"] in bob_ids
    assert not alice_ids & bob_ids
    # Every job each user sees was submitted with that user's key.
    assert {key_id_of(emulator, rid) for rid in alice_ids} == {"alice-key-id"}
    assert {key_id_of(emulator, rid) for rid in bob_ids} == {"bob-key-id"}
    for key in (ALICE_KEY, BOB_KEY):
        secret = key.split(":")[1]
        assert secret not in per_user_server.stderr
        assert all(secret not in json.dumps(result) for result in results.values())


async def test_per_user_request_without_a_key_is_refused(per_user_server: HttpServer) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(per_user_server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "Authorization: Bearer <FAL_KEY>" in response.json()["message"]


async def test_per_user_with_a_server_token_takes_the_key_from_x_fal_key(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    env = server_env(tmp_path, FAL_MCP_BASE_URL=emulator.base_url, FAL_MCP_HTTP_TOKEN=HTTP_TOKEN)
    server = HttpServer(tmp_path, ["--per-user"], env)
    try:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        async with httpx2.AsyncClient() as http:
            token_only = await http.post(server.url, json=body, headers={"Authorization": f"Bearer {HTTP_TOKEN}"})
            key_only = await http.post(server.url, json=body, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        assert token_only.status_code == 401 and "X-Fal-Key" in token_only.json()["message"]
        assert key_only.status_code == 401  # the bearer must be the server's token, not a fal key
        headers = {"Authorization": f"Bearer {HTTP_TOKEN}", "X-Fal-Key": ALICE_KEY}
        async with http_client(server.url, headers=headers) as client:
            result = await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": {"seconds": 2}})
        assert not result.is_error, text_of(result)
        assert key_id_of(emulator, structured(result)["request_id"]) == "alice-key-id"
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_http_server_stops_cleanly_on_a_signal(emulator: EmulatorServer, tmp_path: Path, sig: int) -> None:
    server = HttpServer(tmp_path, [], server_env(tmp_path, FAL_MCP_BASE_URL=emulator.base_url, FAL_KEY=SERVER_KEY))
    async with http_client(server.url) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} >= EXPECTED_TOOLS
    started = time.monotonic()
    assert server.stop(sig) == 0, server.stderr
    assert time.monotonic() - started < 10
    events = [entry["event"] for entry in json_lines(server.stderr)]
    assert "http.stopped" in events


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["--host", "0.0.0.0"], {}, "refusing to serve on '0.0.0.0' without authentication"),
        ([], {"FAL_MCP_HTTP_TOKEN": "short"}, "FAL_MCP_HTTP_TOKEN must be at least 16 characters"),
    ],
)
def test_http_refuses_to_start_unprotected(
    tmp_path: Path, args: list[str], extra_env: dict[str, str], message: str
) -> None:
    """Exits before binding anything: nothing listens on a public interface."""
    env = server_env(tmp_path, FAL_KEY=SERVER_KEY, **extra_env)
    command = [sys.executable, "-m", "fal_mcp", "serve", "--transport", "http", "--port", "0", *args]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "FAL_MCP_HTTP_TOKEN" in done.stderr  # says how to fix it
    assert done.stdout == ""
