"""What every benchmark shares: the machine's description, result files, tables, statistics, an
emulator that counts the HTTP requests it serves, the stdio server's environment, and RSS sampling.

Nothing here changes the emulator or the server: requests are counted by an ASGI wrapper around the
emulator's app, memory is read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_KEY = "bench-key-id:bench-key-secret-0123456789"
PACKAGES = ("mcp", "httpx2", "httpcore2", "starlette", "uvicorn", "anyio", "pydantic", "structlog", "pillow")
MiB = 1024 * 1024
MB = 1000 * 1000  # the targets' unit


# -- the machine and the results ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Where and with what a figure was measured (it means little without this)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git_commit(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # others' work on a shared machine skews timings
    }


def write_result(name: str, data: Mapping[str, Any]) -> Path:
    """``benchmarks/results/<name>.json``: the figures plus the machine they were measured on."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"benchmark": name, "machine": machine_info(), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def say(text: str = "") -> None:
    """One line to stdout: benchmarks are scripts, and their tables are their output."""
    print(text)  # noqa: T201


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned table on stdout (benchmarks are scripts, not library code)."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    say(f"\n{title}")
    for index, row in enumerate(cells):
        say("  " + "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            say("  " + "  ".join("-" * width for width in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, min, median, mean, p90, max and standard deviation of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p90": p90,
        "max": ordered[-1],
        "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
    }


# -- an emulator that counts what it serves ------------------------------------------------------

_QUEUE_ACTION = re.compile(r"^/queue/.+?/requests/[^/]+(?P<action>/status/stream|/status|/response|/cancel)?/?$")


def request_kind(method: str, path: str) -> str:
    """A short name for an emulator request: submit, status, status_stream, result, history, upload…"""
    if path.startswith("/queue/"):
        match = _QUEUE_ACTION.match(path)
        if match is None:
            return "submit" if method == "POST" else f"queue_{method.lower()}"
        action = match.group("action") or ""
        return {"/status/stream": "status_stream", "/status": "status", "/cancel": "cancel"}.get(action, "result")
    if path.startswith("/platform/models/requests"):
        return "history"
    if path.startswith(("/platform", "/openapi")):
        return "catalog"
    if path.startswith("/cdn"):
        return "cdn_" + ("get" if method in ("GET", "HEAD") else "upload")
    if path.startswith("/rest"):
        return "rest"
    if path.startswith("/run"):
        return "run"
    return "other"


class CountingApp:
    """ASGI wrapper that counts every HTTP request and WebSocket by :func:`request_kind`.

    ``send`` is passed through untouched: the emulator's "drop" faults close the connection through
    uvicorn's own bound ``send``. ``state`` is the wrapped app's, so ``EmulatorServer.state`` keeps working.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state = app.state  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            kind = request_kind(scope.get("method", "WS"), scope["path"])
            with self._lock:
                self._counts[kind] += 1
        await self.app(scope, receive, send)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)


def counting_emulator(config: EmulatorConfig) -> tuple[EmulatorServer, CountingApp]:
    """An (unstarted) emulator whose app is wrapped in a :class:`CountingApp`."""
    server = EmulatorServer(config)
    counter = CountingApp(server.app)
    server.app = counter  # type: ignore[assignment]
    return server, counter


def diff_counts(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {kind: n for kind, n in sorted((after - before).items()) if n}


# -- the server as a stdio subprocess --------------------------------------------------------------


def server_env(
    state_dir: Path, base_url: str | None = None, *, key: str | None = BENCH_KEY, **extra: str
) -> dict[str, str]:
    """The server subprocess's environment: a throwaway ledger and cache, the emulator's URL, a test key."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    env["FAL_MCP_LEDGER"] = str(state_dir / "ledger.sqlite3")
    env["FAL_MCP_CACHE_DIR"] = str(state_dir / "cache")
    if base_url is not None:
        env["FAL_MCP_BASE_URL"] = base_url
    if key is not None:
        env["FAL_KEY"] = key
    env.update(extra)
    return env


def server_command() -> list[str]:
    """How a host launches fal-mcp over stdio (the console script does the same ``main()``)."""
    return [sys.executable, "-m", "fal_mcp"]


def child_pids() -> list[int]:
    """The current process's direct children (from every thread's ``children`` list)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(pids)


def find_child(marker: str, timeout: float = 10.0) -> int:
    """The newest child process whose command line contains ``marker`` (e.g. ``-m fal_mcp``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: list[tuple[int, int]] = []
        for pid in child_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
            except (OSError, ValueError, IndexError):
                continue
            if marker in cmdline:
                found.append((started, pid))
        if found:
            return max(found)[1]
        time.sleep(0.01)
    raise RuntimeError(f"no child process running {marker!r}")


# -- memory ----------------------------------------------------------------------------------------


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (``clear_refs`` 5), so the next peak is this phase's own."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS in a thread; ``peak`` is the highest sample (VmHWM is the kernel's exact one)."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = memory_of(self.pid).get("VmRSS", 0)
            except OSError:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def mib(value: float) -> float:
    return round(value / MiB, 1)
