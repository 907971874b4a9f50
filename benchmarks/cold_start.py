"""Target 1: cold start to the first ``tools/list`` answer, within 1.10x of a one-tool ``MCPServer``.

Each run spawns the server as a stdio subprocess (no ``FAL_KEY``, a fresh temp ``FAL_MCP_LEDGER``) and
times, from just before the spawn, the real JSON-RPC exchange a host does: ``initialize`` → its answer
→ ``notifications/initialized`` + ``tools/list`` → the tool list. The cases are interleaved (the order
rotates every round) after a few discarded warm-up runs, so drift in the machine's load hits all alike.

    python -m benchmarks.cold_start [--runs 40] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from benchmarks._common import ROOT, print_table, say, server_command, server_env, summarize, write_result

PROTOCOL_VERSION = "2025-11-25"
RUN_TIMEOUT_SECONDS = 30.0
TARGET_RATIO = 1.10


def cases() -> dict[str, list[str]]:
    """What is timed: the SDK's floor, fal-mcp as ``python -m fal_mcp`` and as the console script."""
    found = {
        "baseline: one-tool MCPServer": [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py")],
        "fal-mcp (python -m fal_mcp)": server_command(),
    }
    script = Path(sys.executable).with_name("fal-mcp")
    if script.exists():
        found["fal-mcp (console script)"] = [str(script)]
    return found


def _send(stdin: IO[bytes], message: dict[str, Any]) -> None:
    stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    stdin.flush()


def _answer(stdout: IO[bytes], request_id: int) -> tuple[dict[str, Any], int]:
    """The response to ``request_id`` (skipping notifications) and its size on the wire."""
    while True:
        line = stdout.readline()
        if not line:
            raise RuntimeError("the server closed stdout before answering")
        message = json.loads(line)
        if message.get("id") == request_id:
            if "error" in message:
                raise RuntimeError(f"server answered with an error: {message['error']}")
            return message["result"], len(line)


def time_first_tools_list(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Seconds from spawn to the ``initialize`` answer and to the ``tools/list`` answer."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errlog:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env, cwd=cwd)
        watchdog = threading.Timer(RUN_TIMEOUT_SECONDS, process.kill)  # bounded, whatever the server does
        watchdog.start()
        assert process.stdin is not None and process.stdout is not None
        try:
            _send(
                process.stdin,
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": PROTOCOL_VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "fal-mcp-bench", "version": "1"},
                    },
                },
            )
            _answer(process.stdout, 1)
            initialized = time.perf_counter()
            _send(process.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            _send(process.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
            result, size = _answer(process.stdout, 2)
            listed = time.perf_counter()
        except Exception as exc:
            errlog.seek(0)
            raise RuntimeError(f"{argv}: {exc}\n{errlog.read().decode(errors='replace')[-2000:]}") from exc
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            watchdog.cancel()
            process.stdout.close()
    return {
        "initialize_s": initialized - started,
        "tools_list_s": listed - started,
        "tools": len(result["tools"]),
        "tools_list_bytes": size,
    }


def run(runs: int = 40, warmup: int = 3) -> dict[str, Any]:
    argvs = cases()
    names = list(argvs)
    times: dict[str, list[float]] = {name: [] for name in names}
    init_times: dict[str, list[float]] = {name: [] for name in names}
    shapes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="fal-mcp-bench-cold-") as tmp:
        cwd = Path(tmp)
        for round_no in range(warmup + runs):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                state = cwd / f"state-{round_no}-{names.index(name)}"
                state.mkdir()
                measured = time_first_tools_list(argvs[name], server_env(state, key=None), cwd)
                if round_no >= warmup:
                    times[name].append(measured["tools_list_s"])
                    init_times[name].append(measured["initialize_s"])
                shapes[name] = {"tools": measured["tools"], "tools_list_bytes": measured["tools_list_bytes"]}
    stats = {name: summarize(values) for name, values in times.items()}
    baseline = stats[names[0]]
    ours = stats[names[1]]
    ratio_median = ours["median"] / baseline["median"]
    ratio_min = ours["min"] / baseline["min"]
    # Each round runs both back to back, so a per-round ratio cancels slow drifts in the machine's load.
    paired = summarize([a / b for a, b in zip(times[names[1]], times[names[0]], strict=True)])
    return {
        "method": (
            f"stdio subprocess, JSON-RPC initialize ({PROTOCOL_VERSION}) + notifications/initialized + tools/list; "
            f"no FAL_KEY, temp FAL_MCP_LEDGER; {runs} interleaved runs per case after {warmup} warm-up rounds"
        ),
        "cases": {
            name: {
                "argv": " ".join(Path(a).name if a == sys.executable else a for a in argvs[name]),
                "tools_list_s": stats[name],
                "initialize_s": summarize(init_times[name]),
                **shapes[name],
            }
            for name in names
        },
        "ratio_median": ratio_median,
        "ratio_min": ratio_min,
        "ratio_paired": paired,
        "target": f"<= {TARGET_RATIO}x the one-tool MCPServer",
        "met": ratio_median <= TARGET_RATIO,
    }


def report(result: dict[str, Any]) -> None:
    rows = []
    for name, case in result["cases"].items():
        t = case["tools_list_s"]
        rows.append(
            [
                name,
                f"{t['median'] * 1000:.1f}",
                f"{t['min'] * 1000:.1f}",
                f"{t['p90'] * 1000:.1f}",
                f"{case['initialize_s']['median'] * 1000:.1f}",
                case["tools"],
                case["tools_list_bytes"],
            ]
        )
    print_table(
        "Cold start: spawn → first tools/list answer (stdio)",
        ["case", "median ms", "min ms", "p90 ms", "init median ms", "tools", "tools/list bytes"],
        rows,
    )
    verdict = "met" if result["met"] else "MISSED"
    say(
        f"  fal-mcp / baseline: median {result['ratio_median']:.3f}x, min {result['ratio_min']:.3f}x, "
        f"median of per-round ratios {result['ratio_paired']['median']:.3f}x (target {result['target']}: {verdict})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.runs, args.warmup)
    report(result)
    say(f"  → {write_result('cold_start', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
