"""The TypeScript MCP SDK client (``@modelcontextprotocol/sdk``, pinned in ``package.json``) as a pytest fixture.

``driver.mjs`` runs in a Node subprocess and does one command a line (connect, listTools, callTool, …); the
:class:`TsClient` here sends those commands and waits for their answers, so a test reads like any other
client test while every call goes through the same ``Client.callTool`` that Claude Code, Cursor, VS Code,
Gemini CLI and the Inspector use (it validates ``structuredContent`` against the tool's ``outputSchema``).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fal_mcp.emulator.server import EmulatorServer
from tests.emulators import shared_emulator
from tests.server.test_transports import SERVER_KEY, HttpServer, server_env

TS_DIR = Path(__file__).parent
SDK_LATEST = "2025-11-25"  # LATEST_PROTOCOL_VERSION of the pinned SDK: what every host on it offers
ANSWER_TIMEOUT = 90.0
# Every tool the server lists: each has success tests (test_ts_sdk_client.py) and error tests (test_ts_sdk_errors.py).
ALL_TOOLS = {
    "model_search",
    "model_schema",
    "fal_subscribe",
    "queue_submit",
    "queue_status",
    "queue_result",
    "queue_cancel",
    "jobs_list",
    "fal_run",
    "fal_stream",
    "fal_realtime",
    "upload_file",
}


@dataclass
class ToolCall:
    """What ``client.callTool`` gave back (``result``) or threw (``threw``), and the progress of the call.

    ``progress`` is what the SDK handed to ``onprogress``; ``sent`` is every progress notification the server
    sent for the call, read off the wire in order. They differ when progress and the response arrive in one
    read: the SDK settles the response at once and dispatches notifications a microtask later, by when the
    call's progress handler is gone (it reports them as "unknown token" and drops them), so progress tests
    check ``sent``.
    """

    name: str
    request_id: int
    result: dict[str, Any] | None
    threw: dict[str, Any] | None
    progress: list[dict[str, Any]]
    sent: list[dict[str, Any]]

    @property
    def returned(self) -> dict[str, Any]:
        assert self.threw is None, f"{self.name}: the TypeScript client threw {self.threw}"
        assert self.result is not None
        return self.result

    @property
    def text(self) -> str:
        return "\n".join(block.get("text", "") for block in self.returned["content"] if block["type"] == "text")

    @property
    def structured(self) -> dict[str, Any]:
        """The success's structuredContent (already validated against the outputSchema by the client)."""
        result = self.returned
        assert not result.get("isError"), f"{self.name} failed: {self.text}"
        return result["structuredContent"]

    def block_types(self) -> list[str]:
        return [block["type"] for block in self.returned["content"]]

    def sent_values(self) -> list[float]:
        return [event["progress"] for event in self.sent]

    def sent_messages(self) -> list[str]:
        return [event["message"] or "" for event in self.sent]


def first_text(call: ToolCall) -> str:
    """The error as Claude Code shows it to the model: the first text block, nothing else."""
    assert call.threw is None, f"{call.name}: the TypeScript client threw instead of returning the error: {call.threw}"
    result = call.returned
    assert result.get("isError") is True, f"{call.name} did not fail: {result}"
    texts = [block["text"] for block in result["content"] if block["type"] == "text"]
    assert texts, f"{call.name}: an error with no text block: {result}"
    return texts[0]


@dataclass
class TsClient:
    """One ``node driver.mjs`` process holding one TypeScript SDK client session."""

    process: subprocess.Popen[str]
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    stderr: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    connected: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls) -> TsClient:
        if not (TS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
            pytest.fail("@modelcontextprotocol/sdk is not installed: run `npm ci --prefix tests/ts`")
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH (the TypeScript SDK tests need Node.js 20+)")
        process = subprocess.Popen(
            [node, "driver.mjs"],
            cwd=TS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        client = cls(process)
        for reader in (client._read_answers, client._read_stderr):
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            client._readers.append(thread)
        return client

    def _read_answers(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                answer = json.loads(line)
                with self._arrived:
                    self.answers[answer["id"]] = answer
                    self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def send(self, op: str, **fields: Any) -> int:
        """Start a command; :meth:`wait` for its answer."""
        assert self.process.stdin is not None
        with self._lock:
            command_id = next(self._ids)
            self.process.stdin.write(json.dumps({"id": command_id, "op": op, **fields}) + "\n")
            self.process.stdin.flush()
        return command_id

    def wait(self, command_id: int, timeout: float = ANSWER_TIMEOUT) -> Any:
        with self._arrived:
            answered = self._arrived.wait_for(
                lambda: command_id in self.answers or self.process.poll() is not None, timeout
            )
            answer = self.answers.pop(command_id, None)
        if answer is None:
            state = "exited" if answered else f"did not answer within {timeout} s"
            raise AssertionError(f"the TypeScript driver {state}:\n{''.join(self.stderr)[-4000:]}")
        if not answer["ok"]:
            raise AssertionError(f"driver command failed: {answer['error']}\n{answer.get('stack') or ''}")
        return answer["value"]

    def request(self, op: str, **fields: Any) -> Any:
        return self.wait(self.send(op, **fields))

    def connect(self, server: dict[str, Any], protocol_version: str | None = None, **fields: Any) -> dict[str, Any]:
        """Initialize, then list the tools as every host does first: ``callTool`` checks a result against
        its tool's ``outputSchema`` only once ``listTools`` has shown it that schema."""
        self.connected = self.request("connect", server=server, protocolVersion=protocol_version, **fields)
        self.tools = self.request("listTools")["tools"]
        return self.connected

    def start_call(self, name: str, arguments: dict[str, Any], **options: Any) -> int:
        return self.send("callTool", name=name, arguments=arguments, **options)

    def finish_call(self, command_id: int, name: str) -> ToolCall:
        value = self.wait(command_id)
        return ToolCall(
            name, value["requestId"], value["result"], value["threw"], value["progress"], value["wireProgress"]
        )

    def call(self, name: str, arguments: dict[str, Any], **options: Any) -> ToolCall:
        """``client.callTool`` with a progress callback; ``abortAfterProgress=n`` aborts it after n updates."""
        return self.finish_call(self.start_call(name, arguments, **options), name)

    def close(self) -> None:
        """Close the session (the SDK ends a stdio server the way hosts do), then the driver."""
        assert self.process.stdin is not None and self.process.stdout is not None and self.process.stderr is not None
        try:
            if self.process.poll() is None:
                self.request("close")
        finally:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for reader in self._readers:
                reader.join(timeout=5)
            self.process.stdout.close()
            self.process.stderr.close()


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (and return that)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Session:
    """A connected TypeScript client, and what a test needs to know about the server behind it."""

    name: str
    client: TsClient
    workdir: Path
    emulator: EmulatorServer


@contextmanager
def stdio_session(
    tmp_path: Path,
    command: list[str],
    protocol_version: str | None = None,
    *,
    connect: dict[str, Any] | None = None,
    **env: str,
) -> Iterator[TsClient]:
    """A TypeScript client connected to its own ``command`` stdio server (run in a fresh workdir, ``env`` added);
    ``connect`` adds options of the driver's connect command (e.g. ``{"elicitation": "accept"}``)."""
    workdir = make_workdir(tmp_path)
    client = TsClient.start()
    try:
        server = {"transport": "stdio", "command": command[0], "args": command[1:], "cwd": str(workdir)}
        client.connect({**server, "env": server_env(tmp_path, **env)}, protocol_version, **(connect or {}))
        yield client
    finally:
        client.close()


def explained(error: dict, diagnostics: dict) -> bool:
    """A client error about a message that crossed its request's end on the wire, which the client drops.

    * a response to a request the client had cancelled: the spec lets it cross the cancellation, and over
      HTTP there is always one (the mcp SDK's 2025-era transport answers a cancelled request with -32800 so
      the request's SSE stream ends: mcp/server/streamable_http.py, _terminate_unanswered_request);
    * progress for a request that was cancelled or has been answered: sent before the response (checked on
      the wire below) but dispatched by the SDK after it (see ``ToolCall``).
    """
    for prefix, ended in (
        ("Received a response for an unknown message ID: ", diagnostics["cancelledRequests"]),
        (
            "Received a progress notification for an unknown token: ",
            diagnostics["cancelledRequests"] + diagnostics["responded"],
        ),
    ):
        if error["message"].startswith(prefix):
            message = json.loads(error["message"].removeprefix(prefix))
            return (message["id"] if "id" in message else message["params"]["progressToken"]) in ended
    return False


def unexplained_errors(diagnostics: dict[str, Any]) -> list[dict[str, Any]]:
    """The protocol errors the client reported that :func:`explained` does not account for."""
    return [error for error in diagnostics["clientErrors"] if not explained(error, diagnostics)]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator(concurrency_per_app=4)


def make_workdir(root: Path) -> Path:
    """The server's working directory (its file root without client roots), with a picture to upload."""
    work = root / "work"
    work.mkdir(parents=True)
    Image.new("RGB", (48, 32), (30, 120, 200)).save(work / "pixel.png")
    return work


@pytest.fixture(scope="module", params=["stdio", "http"])
def session(
    request: pytest.FixtureRequest, emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    """A TypeScript SDK session with ``fal-mcp`` (pointed at the test emulator) over stdio or streamable HTTP."""
    transport: str = request.param
    root = tmp_path_factory.mktemp(f"ts-{transport}")
    workdir = make_workdir(root)
    env = server_env(root, FAL_MCP_BASE_URL=emulator.base_url, FAL_KEY=SERVER_KEY)
    http: HttpServer | None = None
    if transport == "stdio":
        server = {"transport": "stdio", "command": sys.executable, "args": ["-m", "fal_mcp"], "env": env}
        server["cwd"] = str(workdir)
    else:
        http = HttpServer(workdir, [], env)
        server = {"transport": "http", "url": http.url}
    client = TsClient.start()
    try:
        client.connect(server)
        yield Session(transport, client, workdir, emulator)
    finally:
        client.close()
        if http is not None:
            http.stop()
