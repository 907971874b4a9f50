"""CLI manners: options before a sub-command, Ctrl-C and SIGTERM on the stdio server, and what a person
who runs ``fal-mcp`` by hand in a terminal sees."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from fal_mcp.ledger import JobRecord, Ledger
from fal_mcp.server.stdio import WAITING_LINE
from tests.server.test_transports import server_env

FAL_MCP = str(Path(sys.executable).with_name("fal-mcp"))  # the console script, as a user or host runs it


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
    return subprocess.run(
        [FAL_MCP, *args],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_local_before_doctor_runs_doctor_locally(tmp_path: Path) -> None:
    before = run_cli(tmp_path, "--local", "doctor", "--json")
    after = run_cli(tmp_path, "doctor", "--local", "--json")
    assert before.returncode == after.returncode == 0, before.stderr
    report = json.loads(before.stdout)
    assert report["target"] == json.loads(after.stdout)["target"]
    assert "--local" in report["target"]


def test_local_before_demo_reaches_the_demo(tmp_path: Path) -> None:
    """The demo is offline anyway: ``--local`` before it is accepted, and the demo (not a server) answers."""
    done = run_cli(tmp_path, "--local", "demo", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: fal-mcp demo")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "9000", "doctor"], "--port"),
        (["--transport", "http", "demo"], "--transport"),
        (["--local", "emulator"], "--local"),
        (["--per-user", "--local", "emulator"], "--local, --per-user"),
    ],
)
def test_serving_options_before_other_commands_are_refused_clearly(tmp_path: Path, args: list[str], named: str) -> None:
    done = run_cli(tmp_path, *args)
    command = args[-1]
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"{named} " in done.stderr and f"`fal-mcp {command}` does not use" in done.stderr, done.stderr
    assert f"fal-mcp {command} --help" in done.stderr


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr


def test_serving_options_before_serve_are_kept(tmp_path: Path) -> None:
    """``fal-mcp --transport http serve --port 0`` serves HTTP: options on both sides of ``serve`` count."""
    env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
    command = [FAL_MCP, "--local", "--transport", "http", "serve", "--port", "0"]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        events = []
        for line in process.stderr:  # ends when the process does; the server logs http.listening once bound
            event = json.loads(line)["event"]
            events.append(event)
            if event == "http.listening":
                break
        assert "http.listening" in events, events
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            stream.close()


class Terminal:
    """``fal-mcp`` with a pseudo-terminal as stdin, stdout and stderr: a person running it by hand."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become fal-mcp
            os.chdir(tmp_path)
            os.execve(FAL_MCP, [FAL_MCP, *args], env)
        self.output = b""

    def read_until(self, condition, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition(self.output.decode(errors="replace")):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    return condition(self.output.decode(errors="replace"))
                if not chunk:
                    return condition(self.output.decode(errors="replace"))
                self.output += chunk
        return True

    def wait(self, timeout: float = 15.0) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read_until(lambda _: False, timeout=0.05)  # keep draining so the child never blocks on output
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.mark.parametrize("key", [b"\x03", b"\x04"], ids=["ctrl-c", "ctrl-d"])
def test_in_a_terminal_it_says_what_it_is_and_ctrl_c_ends_it(tmp_path: Path, key: bytes) -> None:
    terminal = Terminal(tmp_path, "--local")
    try:
        assert terminal.read_until(lambda out: WAITING_LINE in out), terminal.output
        os.write(terminal.fd, key)  # through the terminal: SIGINT (^C) or end of input (^D)
        code = terminal.wait()
        assert code == 0, (code, terminal.output)
    finally:
        terminal.kill()
    text = terminal.output.decode(errors="replace")
    lines = [line.removeprefix("^C").removeprefix("^D") for line in text.replace("\r", "").splitlines()]
    lines = [line for line in lines if line.strip()]  # the terminal echoes ^C or ^D before the next output
    assert lines[0] == WAITING_LINE
    assert len([line for line in lines if not line.startswith("{")]) == 1, lines  # one plain line; logs are JSON
    assert all(json.loads(line) for line in lines[1:])
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def ledger_jobs(path: Path) -> list[JobRecord]:
    """Every owner's jobs (a ``--local`` server keeps its jobs under its own emulator's namespace)."""
    import sqlite3

    owners = [row[0] for row in sqlite3.connect(path).execute("SELECT DISTINCT owner FROM jobs")]

    async def read() -> list[JobRecord]:
        async with Ledger.open(path) as ledger:
            return [job for owner in owners for job in await ledger.list(owner, limit=50)]

    return anyio.run(read)


@pytest.mark.parametrize(
    ("sig", "on_cancel", "fate"),
    [(signal.SIGINT, "cancel", "CANCELLED"), (signal.SIGTERM, "keep", "IN_PROGRESS")],
    ids=["sigint", "sigterm-keep"],
)
def test_a_signal_mid_session_ends_the_stdio_server_cleanly(
    tmp_path: Path, sig: int, on_cancel: str, fate: str
) -> None:
    """A session with a job running: the server stops within seconds, exit code 0, stdout still only JSON-RPC,
    and the job's request id stays in the ledger (cancelled, or left running with FAL_MCP_ON_CLIENT_CANCEL=keep)."""
    env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02", FAL_MCP_ON_CLIENT_CANCEL=on_cancel)
    process = subprocess.Popen(
        [FAL_MCP, "--local"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None

    def send(message: dict) -> None:
        assert process.stdin is not None
        process.stdin.write(json.dumps(message).encode() + b"\n")
        process.stdin.flush()

    client = {"name": "signal-test", "version": "0"}
    send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client},
        }
    )
    assert json.loads(process.stdout.readline())["id"] == 1
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    arguments = {"endpoint_id": "emulator/slow", "input": {"seconds": 500, "steps": 50}}
    send(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "fal_subscribe", "arguments": arguments, "_meta": {"progressToken": 1}},
        }
    )
    # The job is under way once fal took it (a queue position or a step is reported after the submit).
    while "submitting" in json.loads(process.stdout.readline())["params"]["message"]:
        pass
    started = time.monotonic()
    process.send_signal(sig)
    try:
        process.wait(timeout=20)  # stdin stays open: only the signal can end it
    finally:
        process.kill()
    assert process.stderr is not None
    stdout, stderr = process.stdout.read(), process.stderr.read()
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()
    assert process.returncode == 0, stderr.decode()
    assert time.monotonic() - started < 10
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in stdout.splitlines() if line.strip())
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines() if line.strip()]
    assert "stdio.stopping" in events and "stdio.stopped" in events
    assert events[-1] == "local.emulator.stopped"  # the CLI stops its emulator after the server
    assert b"Traceback" not in stderr
    [job] = ledger_jobs(tmp_path / "ledger.sqlite3")
    assert job.request_id and job.endpoint_id == "emulator/slow" and job.status == fate
    assert job.owner.startswith("local@http://127.0.0.1:")  # --local jobs never mix with real fal's


@pytest.mark.parametrize("closed", ["<&-", ">&-"], ids=["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_is_refused_clearly(tmp_path: Path, closed: str) -> None:
    """Nobody can talk to a server without both pipes: say so (no traceback), rather than serve a broken fd."""
    env = server_env(tmp_path, FAL_MCP_EMULATOR_TIME_SCALE="0.02")
    done = subprocess.run(
        ["/bin/sh", "-c", f'exec "$0" --local {closed}', FAL_MCP],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "fal-mcp: stdin or stdout is closed; an MCP client launches fal-mcp with pipes on both.\n"
