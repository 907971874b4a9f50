"""Issue 9 #2: a ``--per-user`` HTTP server fed 1,000 distinct made-up keys must grow < 40 MiB and answer
the last as fast as the first.

``fal-mcp serve --transport http --per-user`` runs as a subprocess against the emulator in this process;
its RSS is read from ``/proc/<pid>/status`` before and after. Three cases, each in a fresh server:

- ``refused``: keys not shaped like fal keys (no id, too short, outside fal's alphabet, a tab inside,
  far too long) — each one ``initialize`` request, which must be answered 401;
- ``closed``: fal-shaped random keys (``<uuid>:<32 hex>``) — each opens a session, calls ``jobs_list``
  (which builds that caller's fal client and ledger view) and DELETEs the session, as clients do;
- ``held``: fal-shaped random keys that open a session and never close it (the SDK keeps each session's
  state until it is idle for 30 minutes). The server caps open sessions (``MAX_SESSIONS``), so this case opens as
  many as fit after the warm-up, then checks that one more is refused (503).

    python -m benchmarks.per_user_keys [--keys 1000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2

from benchmarks._common import print_table, say, server_env, write_result
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.server.http import MAX_SESSIONS

WARM_UP = 20

PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def refused_key(i: int) -> str:
    shapes = [
        lambda: secrets.token_hex(24),
        lambda: f"{secrets.token_hex(2)}:{secrets.token_hex(20)}",
        lambda: f"{uuid.uuid4()}:{secrets.token_hex(16)}!",
        lambda: "x" * 300 + ":" + secrets.token_hex(300),
        lambda: f"{secrets.token_hex(6)}:{secrets.token_hex(8)}\t{secrets.token_hex(4)}",
    ]
    return shapes[i % len(shapes)]()


def fal_shaped_key() -> str:
    return f"{uuid.uuid4()}:{secrets.token_hex(16)}"


class Server:
    def __init__(self, tmp: Path, base_url: str) -> None:
        env = server_env(tmp, base_url, key=None)
        command = [sys.executable, "-m", "fal_mcp", "serve", "--transport", "http", "--port", "0", "--per-user"]
        self.process = subprocess.Popen(
            command, env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                if b'"http.listening"' in line:
                    self.url = json.loads(line)["url"]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            self.process.kill()
            raise RuntimeError("the server never listened")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def feed(http: httpx2.Client, url: str, key: str, case: str) -> float:
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT, "MCP-Protocol-Version": PROTOCOL}
    params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    response = http.post(
        url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, headers=headers
    )
    if case == "refused":
        assert response.status_code == 401, response.status_code
        return time.perf_counter() - started
    assert response.status_code == 200, response.text
    headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "jobs_list", "arguments": {}}}
    assert http.post(url, json=call, headers=headers).status_code == 200
    if case == "closed":
        assert http.delete(url, headers=headers).status_code == 200
    return time.perf_counter() - started


def run_case(case: str, keys: int, base_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, httpx2.Client(timeout=30) as http:
        server = Server(Path(tmp), base_url)
        try:
            make = (lambda i: refused_key(i)) if case == "refused" else (lambda i: fal_shaped_key())
            for i in range(WARM_UP):
                feed(http, server.url, make(i), case)
            if case == "held":
                keys = min(keys, MAX_SESSIONS - WARM_UP)
            before = rss_mib(server.process.pid)
            times = [feed(http, server.url, make(i), case) for i in range(keys)]
            after = rss_mib(server.process.pid)
            if case == "held":
                try:
                    feed(http, server.url, fal_shaped_key(), case)
                except AssertionError as exc:
                    assert "Too many open sessions" in str(exc), exc
                else:
                    raise AssertionError(f"a session beyond {MAX_SESSIONS} was opened")
        finally:
            server.stop()
    first, last = statistics.median(times[:100]) * 1000, statistics.median(times[-100:]) * 1000
    return {
        "case": case,
        "keys": keys,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "rss_growth_mib": after - before,
        "first_100_median_ms": first,
        "last_100_median_ms": last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    with EmulatorServer(EmulatorConfig()) as emulator:
        rows = [run_case(case, args.keys, emulator.base_url) for case in ("refused", "closed", "held")]
    print_table(
        f"--per-user server fed {args.keys} distinct made-up keys",
        ["case", "RSS before MiB", "after", "growth", "first 100 ms (median)", "last 100 ms"],
        [
            [
                r["case"],
                r["rss_before_mib"],
                r["rss_after_mib"],
                r["rss_growth_mib"],
                r["first_100_median_ms"],
                r["last_100_median_ms"],
            ]
            for r in rows
        ],
    )
    path = write_result(
        "per_user_keys", {"target": "< 40 MiB growth for 1,000 keys; last as fast as first", "cases": rows}
    )
    say(f"\nwrote {path}")


if __name__ == "__main__":
    main()
