"""The fal key never leaves the process as text: not in tool results (success or any error), progress,
log lines (a real stdio server's stderr, with retries), ``repr``/``str`` of anything, or exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fal_mcp.config import Settings
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import FalCredentials, credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import AuthenticationError, FalConnectionError, FalError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import RetryPolicy
from fal_mcp.log import configure_logging, get_logger
from fal_mcp.server.app import build_server
from tests.server.helpers import Progress, call, error_of, text_of
from tests.server.test_transports import server_env

pytestmark = pytest.mark.anyio

KEY_ID = "sk-test-id"
SECRET = "SECRET-xyz-9c41e7a2b05d"
KEY = f"{KEY_ID}:{SECRET}"


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text, f"the fal key's secret leaked into {where}"


def everything_in(result: CallToolResult, progress: Progress | None = None) -> str:
    """All a client receives from one call: every content block, structured content, progress."""
    parts = [block.model_dump_json() for block in result.content]
    parts.append(json.dumps(result.structured_content))
    if progress is not None:
        parts += [repr(event) for event in progress.events]
    return "\n".join(parts)


class RejectingFal:
    """A fal that refuses every key with 401, echoing the Authorization header it got in the detail.

    The emulator accepts any key; this stands in for fal with a revoked key, behind a careless proxy
    that reflects headers — the worst case for a leak through an error body.
    """

    def __init__(self) -> None:
        async def refuse(request: Request) -> JSONResponse:
            detail = f"invalid key credentials ({request.headers.get('authorization', '')})"
            return JSONResponse({"detail": detail}, status_code=401)

        app = Starlette(routes=[Route("/{path:path}", refuse, methods=["GET", "POST", "PUT", "DELETE"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> RejectingFal:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive()
            threading.Event().wait(0.01)
        return self

    @property
    def base_url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(time_scale=0.02, concurrency_per_app=4)) as server:
        yield server


@pytest.fixture(scope="module")
def rejecting_fal() -> Iterator[RejectingFal]:
    with RejectingFal() as fal:
        yield fal


def stdio_server(tmp: Path, base_url: str, errlog: io.TextIOBase) -> Any:
    """``fal-mcp`` over stdio with the key in ``FAL_KEY`` and debug logs written to ``errlog``."""
    env = server_env(tmp, FAL_KEY=KEY, FAL_MCP_BASE_URL=base_url, FAL_MCP_LOG_LEVEL="DEBUG")
    params = StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp"], env=env, cwd=str(tmp))
    return stdio_client(params, errlog=errlog)  # type: ignore[arg-type]


async def test_stdio_session_with_errors_and_retries_never_shows_the_key(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    faults = emulator.state.faults
    faults.add("503", count=2, role="queue", method="POST")  # the first submit is retried twice
    faults.add("429", count=1, role="queue", path=r"/status$")
    faults.add("sse_break", count=1, role="queue", path=r"/status/stream$")
    upload = tmp_path / "note.txt"
    upload.write_text("hello")
    calls: list[tuple[str, dict[str, Any], bool]] = [  # (tool, arguments, is_error expected)
        ("model_search", {"query": "flux"}, False),
        ("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a quiet harbour"}}, False),
        ("upload_file", {"path": str(upload)}, False),
        (
            "fal_run",
            {"endpoint_id": "openrouter/router", "input": {"prompt": "hi", "model": "google/gemini-2.5-flash"}},
            False,
        ),
        ("fal_subscribe", {"endpoint_id": "emulator/strict", "input": {}}, True),  # invalid input
        ("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "forbidden"}}, True),  # policy
        ("fal_subscribe", {"endpoint_id": "emulator/slow", "input": {"seconds": 1, "fail": True}}, True),
        ("fal_subscribe", {"endpoint_id": "fal-ai/no-such-model", "input": {}}, True),  # not found
        ("model_schema", {"endpoint_id": "fal-ai/no-such-model"}, True),
        ("queue_status", {"endpoint_id": "emulator/slow", "request_id": "7d1f0c2e-0000-4000-8000-000000000000"}, True),
        ("fal_subscribe", {"endpoint_id": "not a valid id!", "input": {}}, True),
        ("jobs_list", {}, False),
    ]
    errlog_path = tmp_path / "stderr.log"
    seen: list[str] = []
    with errlog_path.open("w") as errlog:
        async with Client(stdio_server(tmp_path, emulator.base_url, errlog), mode="legacy") as client:
            for tool, arguments, expect_error in calls:
                progress = Progress()
                result = await call(client, tool, arguments, progress)
                assert result.is_error == expect_error, (tool, arguments, text_of(result))
                seen.append(everything_in(result, progress))
    assert {fault.kind for fault in faults.fired} == {"503", "429", "sse_break"}
    faults.clear()

    for tool_call, text in zip(calls, seen, strict=True):
        assert_no_secret(text, f"the result of {tool_call[0]}")
    stderr = errlog_path.read_text()
    assert_no_secret(stderr, "the server's stderr")
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(entry["event"] == "fal.retry" for entry in logs), "the injected faults should have caused retries"


async def test_auth_failure_that_echoes_the_header_is_redacted(rejecting_fal: RejectingFal, tmp_path: Path) -> None:
    errlog_path = tmp_path / "stderr.log"
    with errlog_path.open("w") as errlog:
        async with Client(stdio_server(tmp_path, rejecting_fal.base_url, errlog)) as client:
            args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}}
            results = [await call(client, tool, a) for tool, a in (("fal_subscribe", args), ("fal_run", args))]
    for result in results:
        error = error_of(result)
        assert "401" in json.dumps(error) or "key" in json.dumps(error).lower()
        assert_no_secret(everything_in(result), "an authentication error")
    assert_no_secret(errlog_path.read_text(), "the server's stderr")


async def test_not_configured_errors_never_echo_a_half_given_key(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Only FAL_KEY_SECRET set: nothing was registered as a secret, so the message itself must not quote it."""
    settings = Settings(hosts=FalHosts.for_base_url(emulator.base_url), ledger_path=tmp_path / "ledger.sqlite3")
    server = build_server(settings, env={"FAL_KEY_SECRET": SECRET})
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
    assert "FAL_KEY_ID" in text_of(result)
    assert_no_secret(everything_in(result), "the not-configured error")


async def test_reprs_and_exceptions_hide_the_key(rejecting_fal: RejectingFal) -> None:
    credentials = credentials_from_key(KEY, source="test")
    client = FalClient(credentials=credentials, hosts=FalHosts.for_base_url(rejecting_fal.base_url))
    view = client.with_credentials(FalCredentials(f"other-id:{SECRET}-2"))
    settings = Settings.from_env({"FAL_KEY": KEY})
    texts = [repr(credentials), str(credentials), repr(client), str(client), repr(view), repr(settings), str(settings)]
    assert credentials.authorization() == f"Key {KEY}"  # the one place it is revealed: the header itself

    errors: list[BaseException] = []
    async with client:
        with pytest.raises(AuthenticationError) as auth:
            await client.queue.submit("fal-ai/flux/dev", {"prompt": "x"})
        errors.append(auth.value)
    nothing_listens = FalHosts.for_base_url("http://127.0.0.1:9")
    quick = RetryPolicy(max_attempts=2, base_delay=0.01)
    async with FalClient(credentials=credentials, hosts=nothing_listens, retry=quick) as unreachable:
        with pytest.raises(FalConnectionError) as down:
            await unreachable.queue.status("fal-ai/flux/dev", "7d1f0c2e-0000-4000-8000-000000000000")
        errors.append(down.value)
    for error in errors:
        assert isinstance(error, FalError)
        texts += [repr(error), str(error), repr(error.args), getattr(error, "message", "")]
    assert "key=[REDACTED]" in repr(credentials) and "key=[REDACTED]" in repr(client)
    for text in texts:
        assert_no_secret(text, text)


async def test_api_error_body_is_redacted(rejecting_fal: RejectingFal) -> None:
    """fal (or a proxy) echoing the Authorization header must not leave the key inside the exception either."""
    credentials = credentials_from_key(KEY, source="test")
    async with FalClient(credentials=credentials, hosts=FalHosts.for_base_url(rejecting_fal.base_url)) as client:
        with pytest.raises(AuthenticationError) as auth:
            await client.queue.submit("fal-ai/flux/dev", {"prompt": "x"})
    assert_no_secret(repr(vars(auth.value)), "the exception's attributes")


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Our real logging set-up, writing to a buffer; the previous handlers come back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("DEBUG", "json")
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_lines_mask_the_key_wherever_it_hides(captured_logs: io.StringIO) -> None:
    credentials_from_key(KEY, source="test")  # loading a key registers it for redaction
    log = get_logger("tests.secrets")
    log.info("request", headers={"Authorization": f"Key {KEY}"}, url=f"https://queue.fal.run/x?fal_jwt_token={SECRET}")
    log.warning(f"retrying with {KEY}", attempt=[1, {"key": SECRET}])
    try:
        raise RuntimeError(f"boom for {KEY}")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("httpx2").warning("stdlib record carrying %s", KEY)
    # A bearer token never registered anywhere is still masked by its shape.
    log.info("forwarded", authorization="Bearer unregistered-token-123456789")

    lines = captured_logs.getvalue().splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert records[0]["headers"]["Authorization"] == "Key [REDACTED]"
    assert "fal_jwt_token=[REDACTED]" in records[0]["url"]
    assert "boom for" in records[2]["exception"]
    assert "unregistered-token" not in lines[4]
    for line in lines:
        assert_no_secret(line, "a log line")
