"""Target 3: a job's completion reaches the MCP client within ~20 ms of fal reporting it, and the HTTP
requests per job do not grow with the job's length.

Latency: ``fal_subscribe`` jobs one after another, through fal-mcp in memory and as a stdio subprocess,
against an in-process emulator. For each job, from the emulator's record ``completed_at`` (the epoch
time the model finished, taken on the emulator's thread) to (a) the client's progress callback
receiving the ``completed`` message and (b) ``call_tool`` returning. ``emulator/slow`` has no output
files; ``fal-ai/flux/dev`` adds the result's image thumbnail to (b).

Requests per job: every HTTP request the emulator serves is counted by an ASGI wrapper around its app;
3 concurrent 1 s jobs vs 3 concurrent 10 s jobs (real seconds), after one warm-up job (whose extra
requests, the model's schema for input validation, are cached afterwards).

    python -m benchmarks.completion [--jobs 20] [--transports memory,stdio]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks._common import (
    CountingApp,
    counting_emulator,
    diff_counts,
    print_table,
    say,
    summarize,
    write_result,
)
from benchmarks._mcp import Transport, mcp_client, structured
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.log import configure_logging

TARGET_MS = 20.0
LENGTHS_SECONDS = (1.0, 10.0)
CONCURRENT_JOBS = 3
TRAILING_CALLBACK_SECONDS = 0.1  # over real transports progress callbacks may land just after the result


def _slow_input(index: int, seconds: float = 0.3) -> dict[str, Any]:
    return {"seconds": round(seconds + index * 0.0001, 4), "steps": 3}


def _flux_input(index: int) -> dict[str, Any]:
    return {"prompt": f"benchmark lighthouse {index}", "image_size": "square", "num_inference_steps": 4, "seed": index}


WORKLOADS = {"emulator/slow": _slow_input, "fal-ai/flux/dev": _flux_input}


async def _timed_job(client: Any, emulator: EmulatorServer, endpoint: str, data: dict[str, Any]) -> dict[str, float]:
    seen: list[tuple[float, str]] = []

    async def on_progress(_progress: float, _total: float | None, message: str | None) -> None:
        seen.append((time.time(), message or ""))

    args = {"endpoint_id": endpoint, "input": data}
    result = await client.call_tool("fal_subscribe", args, progress_callback=on_progress)
    returned = time.time()
    job = structured(result)
    if result.is_error or job.get("status") != "COMPLETED":
        raise RuntimeError(f"job did not complete: {job}")
    await anyio.sleep(TRAILING_CALLBACK_SECONDS)
    record = emulator.state.queue.get(job["request_id"])
    if record is None or record.completed_at is None:
        raise RuntimeError(f"the emulator has no completed record for {job['request_id']}")
    completed = next((at for at, message in seen if message == "completed"), None)
    if completed is None:
        raise RuntimeError(f"no 'completed' progress message; got {[m for _, m in seen]}")
    return {
        "progress_ms": (completed - record.completed_at) * 1000,
        "return_ms": (returned - record.completed_at) * 1000,
    }


async def measure_latency(transports: list[Transport], jobs: int, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    config = EmulatorConfig(time_scale=1.0, concurrency_per_app=8)
    emulator, _counter = counting_emulator(config)
    with emulator:
        for transport in transports:
            async with mcp_client(transport, emulator.base_url, tmp / f"latency-{transport}") as client:
                for endpoint, make_input in WORKLOADS.items():
                    count = jobs if endpoint == "emulator/slow" else max(1, jobs // 2)
                    await _timed_job(client, emulator, endpoint, make_input(10_000))  # warm-up: schema, imports
                    samples = [await _timed_job(client, emulator, endpoint, make_input(i)) for i in range(count)]
                    rows.append(
                        {
                            "transport": transport,
                            "endpoint": endpoint,
                            "progress_ms": summarize([s["progress_ms"] for s in samples]),
                            "return_ms": summarize([s["return_ms"] for s in samples]),
                        }
                    )
    return rows


async def count_requests(client: Any, counter: CountingApp, inputs: list[dict[str, Any]]) -> dict[str, int]:
    """The emulator requests (by kind) that running these ``fal_subscribe`` jobs at once took."""
    before = counter.snapshot()

    async def one(data: dict[str, Any]) -> None:
        result = await client.call_tool("fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        job = structured(result)
        if result.is_error or job.get("status") != "COMPLETED":
            raise RuntimeError(f"job did not complete: {job}")

    async with anyio.create_task_group() as tg:
        for data in inputs:
            tg.start_soon(one, data)
    return diff_counts(counter.snapshot(), before)


async def measure_requests(transports: list[Transport], tmp: Path) -> list[dict[str, Any]]:
    rows = []
    emulator, counter = counting_emulator(EmulatorConfig(time_scale=1.0, concurrency_per_app=8))
    with emulator:
        for transport in transports:
            async with mcp_client(transport, emulator.base_url, tmp / f"requests-{transport}") as client:
                warmup = await count_requests(client, counter, [_slow_input(90_000, 0.2)])
                for seconds in LENGTHS_SECONDS:
                    inputs = [_slow_input(i + int(seconds) * 100, seconds) for i in range(CONCURRENT_JOBS)]
                    started = time.monotonic()
                    counts = await count_requests(client, counter, inputs)
                    rows.append(
                        {
                            "transport": transport,
                            "job_seconds": seconds,
                            "jobs": len(inputs),
                            "wall_seconds": round(time.monotonic() - started, 2),
                            "requests_per_job": sum(counts.values()) / len(inputs),
                            "by_kind_per_job": {kind: n / len(inputs) for kind, n in counts.items()},
                            "first_job_extra": warmup,
                        }
                    )
    return rows


async def measure(transports: list[Transport], jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fal-mcp-bench-completion-") as tmp:
        latency = await measure_latency(transports, jobs, Path(tmp))
        requests = await measure_requests(transports, Path(tmp))
    slow_progress = [r["progress_ms"]["median"] for r in latency if r["endpoint"] == "emulator/slow"]
    per_job = {(r["transport"], r["job_seconds"]): r["requests_per_job"] for r in requests}
    constant = all(per_job[(t, LENGTHS_SECONDS[0])] == per_job[(t, LENGTHS_SECONDS[-1])] for t in transports)
    return {
        "method": (
            "completed_at (emulator, epoch) → client progress 'completed' / call_tool return; sequential "
            "fal_subscribe jobs after one warm-up each; requests counted at the emulator by an ASGI wrapper"
        ),
        "latency": latency,
        "requests_per_job": requests,
        "target": f"completion reaches the client within ~{TARGET_MS:g} ms; requests per job constant in length",
        "met_latency": all(ms <= TARGET_MS for ms in slow_progress),
        "met_requests_constant": constant,
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            r["transport"],
            r["endpoint"],
            r["progress_ms"]["n"],
            f"{r['progress_ms']['median']:.1f}",
            f"{r['progress_ms']['p90']:.1f}",
            f"{r['progress_ms']['max']:.1f}",
            f"{r['return_ms']['median']:.1f}",
            f"{r['return_ms']['p90']:.1f}",
        ]
        for r in result["latency"]
    ]
    print_table(
        "Completion latency: emulator completed_at → client (ms)",
        ["transport", "endpoint", "jobs", "progress med", "progress p90", "progress max", "return med", "return p90"],
        rows,
    )
    rows = [
        [
            r["transport"],
            f"{r['job_seconds']:g} s",
            r["jobs"],
            r["wall_seconds"],
            f"{r['requests_per_job']:g}",
            ", ".join(f"{k} {v:g}" for k, v in r["by_kind_per_job"].items()),
        ]
        for r in result["requests_per_job"]
    ]
    print_table(
        "HTTP requests per fal_subscribe job, counted at the emulator",
        ["transport", "job length", "jobs", "wall s", "requests/job", "by kind (per job)"],
        rows,
    )
    extras = {r["transport"]: r["first_job_extra"] for r in result["requests_per_job"]}
    for transport, counts in extras.items():
        say(f"  first job on a fresh {transport} server: {counts}")
    say(
        f"  latency target (slow jobs, progress median <= {TARGET_MS:g} ms): "
        f"{'met' if result['met_latency'] else 'MISSED'}; "
        f"requests per job constant: {'yes' if result['met_requests_constant'] else 'NO'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="timed jobs per transport (flux: half)")
    parser.add_argument("--transports", default="memory,stdio")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    transports: list[Transport] = [t for t in args.transports.split(",") if t in ("memory", "stdio")]  # type: ignore[misc]
    result = anyio.run(measure, transports, args.jobs)
    report(result)
    say(f"  → {write_result('completion', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
