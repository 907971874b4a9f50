"""Target 4: 200 concurrent jobs in one server process under 150 MB; a 1 GiB upload adds under 64 MB.

fal-mcp runs as a stdio subprocess (``python -m fal_mcp``); the emulator runs in this process, so its
memory is not counted. The server's memory is read from ``/proc/<pid>/status``: VmRSS, and VmHWM (the
kernel's exact peak RSS), which is reset through ``/proc/<pid>/clear_refs`` before each measured phase
so the phase's own peak is known; a 10 ms RSS sampler runs alongside as a cross-check.

- Concurrency: one MCP session makes 200 ``fal_subscribe`` calls at once (distinct inputs) after one
  warm-up job; the emulator runs them all at once (``concurrency_per_app`` 256). ``emulator/slow``
  (3 s jobs, no files) and ``fal-ai/flux/dev`` (512 px PNGs: the server fetches each and makes a
  thumbnail) are measured in fresh server processes; so are two diagnostic runs of the image jobs
  (thumbnails off; glibc limited to 2 malloc arenas) that attribute where their memory goes.
- Upload: ``upload_file(path=…)`` of a sparse 1 GiB file in the server's working directory, after a
  1 MiB warm-up upload; the figure is the peak during the upload minus the RSS just before it.

    python -m benchmarks.memory [--jobs 200] [--upload-mib 1024] [--skip-flux] [--no-diagnostics]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from benchmarks._common import (
    MB,
    ROOT,
    MiB,
    RssSampler,
    counting_emulator,
    diff_counts,
    find_child,
    memory_of,
    mib,
    print_table,
    reset_peak,
    say,
    server_env,
    write_result,
)
from benchmarks._mcp import mcp_client, structured
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.log import configure_logging

TARGET_JOBS_MB = 150
TARGET_UPLOAD_MB = 64
SERVER_MARKER = "-m fal_mcp"


def _slow(index: int) -> dict[str, Any]:
    return {"seconds": round(3 + index * 1e-6, 6), "steps": 3}  # distinct bodies, 3-4 s


def _flux(index: int) -> dict[str, Any]:
    return {"prompt": f"memory benchmark {index}", "image_size": "square", "num_inference_steps": 20, "seed": index}


WORKLOADS = {"emulator/slow": _slow, "fal-ai/flux/dev": _flux}
# (endpoint, server environment): the targets, then diagnostics that attribute the image jobs' memory.
CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("emulator/slow", {}),
    ("fal-ai/flux/dev", {}),
    ("fal-ai/flux/dev", {"FAL_MCP_THUMBNAILS": "0"}),
    ("fal-ai/flux/dev", {"MALLOC_ARENA_MAX": "2"}),
)


def _max_in_flight(emulator: EmulatorServer, request_ids: list[str]) -> int:
    """How many of these requests the emulator was running at the same moment (at most)."""
    edges: list[tuple[float, int]] = []
    for request_id in request_ids:
        record = emulator.state.queue.get(request_id)
        if record is not None and record.started_at is not None and record.completed_at is not None:
            edges += [(record.started_at, 1), (record.completed_at, -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += step
        peak = max(peak, running)
    return peak


async def _subscribe(client: Client, endpoint: str, data: dict[str, Any]) -> str:
    result = await client.call_tool("fal_subscribe", {"endpoint_id": endpoint, "input": data})
    job = structured(result)
    if result.is_error or job.get("status") != "COMPLETED":
        raise RuntimeError(f"job did not complete: {job}")
    return job["request_id"]


async def measure_jobs(
    emulator: EmulatorServer, counter: Any, endpoint: str, jobs: int, tmp: Path, **env: str
) -> dict[str, Any]:
    make_input = WORKLOADS[endpoint]
    state_dir = tmp / f"jobs-{endpoint.replace('/', '_')}-{time.monotonic_ns()}"
    async with mcp_client("stdio", emulator.base_url, state_dir, **env) as client:
        pid = find_child(SERVER_MARKER)
        await client.list_tools()
        idle = memory_of(pid)
        await _subscribe(client, endpoint, make_input(999_999))  # warm-up: imports, schema, ledger
        warm = memory_of(pid)
        peak_reset = reset_peak(pid)
        request_ids: list[str] = []
        before = counter.snapshot()

        async def one(index: int) -> None:
            request_ids.append(await _subscribe(client, endpoint, make_input(index)))

        started = time.monotonic()
        with RssSampler(pid) as sampler:
            async with anyio.create_task_group() as tg:
                for index in range(jobs):
                    tg.start_soon(one, index)
        elapsed = time.monotonic() - started
        after = memory_of(pid)
        requests = diff_counts(counter.snapshot(), before)
    phase_peak = after["VmHWM"] if peak_reset else sampler.peak
    return {
        "endpoint": endpoint,
        "env": env,
        "jobs": jobs,
        "completed": len(request_ids),
        "max_in_flight_at_emulator": _max_in_flight(emulator, request_ids),
        "wall_seconds": round(elapsed, 2),
        "rss_idle_mb": mib(idle["VmRSS"]),
        "rss_after_warmup_mb": mib(warm["VmRSS"]),
        "peak_before_run_mb": mib(warm["VmHWM"]),
        "peak_during_run_mb": mib(phase_peak),
        "peak_sampled_mb": mib(sampler.peak),
        "rss_after_run_mb": mib(after["VmRSS"]),
        "process_peak_mb": mib(max(warm["VmHWM"], phase_peak)),
        "peak_exact": peak_reset,
        "requests_per_job": round(sum(requests.values()) / jobs, 2),
        "met": max(warm["VmHWM"], phase_peak) < TARGET_JOBS_MB * MB,
    }


async def measure_upload(emulator: EmulatorServer, size_mib: int, tmp: Path) -> dict[str, Any]:
    workdir = tmp / "upload-work"
    workdir.mkdir()
    (workdir / "warmup.bin").write_bytes(os.urandom(MiB))
    big = workdir / "big.bin"
    with big.open("wb") as handle:  # sparse: made instantly, reads back as zeros
        handle.truncate(size_mib * MiB)
    async with mcp_client("stdio", emulator.base_url, tmp / "upload-state", cwd=workdir) as client:
        pid = find_child(SERVER_MARKER)
        warm = structured(await client.call_tool("upload_file", {"path": "warmup.bin"}))
        if warm.get("size") != MiB:
            raise RuntimeError(f"warm-up upload failed: {warm}")
        before = memory_of(pid)
        peak_reset = reset_peak(pid)
        started = time.monotonic()
        with RssSampler(pid) as sampler:
            result = await client.call_tool("upload_file", {"path": "big.bin"})
        elapsed = time.monotonic() - started
        after = memory_of(pid)
    uploaded = structured(result)
    if result.is_error or uploaded.get("size") != size_mib * MiB:
        raise RuntimeError(f"upload failed: {uploaded}")
    peak = after["VmHWM"] if peak_reset else sampler.peak
    added = peak - before["VmRSS"]
    return {
        "size_mib": size_mib,
        "seconds": round(elapsed, 2),
        "throughput_mib_s": round(size_mib / elapsed, 1),
        "rss_before_mb": mib(before["VmRSS"]),
        "peak_during_mb": mib(peak),
        "peak_sampled_mb": mib(sampler.peak),
        "rss_after_mb": mib(after["VmRSS"]),
        "added_mb": mib(added),
        "peak_exact": peak_reset,
        "met": added < TARGET_UPLOAD_MB * MB,
    }


async def sdk_floor_rss(tmp: Path) -> float:
    """RSS (MiB) of the one-tool ``MCPServer`` after its first ``tools/list``: the SDK's own idle floor."""
    baseline = ROOT / "benchmarks" / "baseline_server.py"
    params = StdioServerParameters(command=sys.executable, args=[str(baseline)], env=server_env(tmp, key=None), cwd=tmp)
    with (tmp / "baseline.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await client.list_tools()
            return mib(memory_of(find_child("baseline_server.py"))["VmRSS"])


async def measure(jobs: int, upload_mib: int, cases: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    emulator, counter = counting_emulator(EmulatorConfig(time_scale=1.0, concurrency_per_app=256))
    with tempfile.TemporaryDirectory(prefix="fal-mcp-bench-memory-") as tmp, emulator:
        floor = await sdk_floor_rss(Path(tmp))
        concurrency = [
            await measure_jobs(emulator, counter, endpoint, jobs, Path(tmp), **env) for endpoint, env in cases
        ]
        upload = await measure_upload(emulator, upload_mib, Path(tmp)) if upload_mib else None
    return {
        "method": (
            "server = stdio subprocess (python -m fal_mcp), emulator in the benchmark process; VmRSS/VmHWM from "
            "/proc/<pid>/status, VmHWM reset via clear_refs before each phase; RSS sampled every 10 ms too"
        ),
        "sdk_floor_idle_mb": floor,
        "concurrent_jobs": concurrency,
        "upload": upload,
        "target": f"{jobs} concurrent jobs < {TARGET_JOBS_MB} MB; the upload adds < {TARGET_UPLOAD_MB} MB (MB: 10^6 B)",
        "met": all(r["met"] for r in concurrency if not r["env"]) and (upload is None or upload["met"]),
    }


def report(result: dict[str, Any]) -> None:
    say(f"\n  idle RSS of a one-tool MCPServer (the SDK's floor) after tools/list: {result['sdk_floor_idle_mb']} MiB")
    rows = [
        [
            r["endpoint"] + "".join(f" {k}={v}" for k, v in r["env"].items()),
            f"{r['completed']}/{r['jobs']}",
            r["max_in_flight_at_emulator"],
            r["wall_seconds"],
            r["rss_idle_mb"],
            r["rss_after_warmup_mb"],
            r["peak_during_run_mb"],
            r["rss_after_run_mb"],
            r["process_peak_mb"],
            "met" if r["met"] else "MISSED",
        ]
        for r in result["concurrent_jobs"]
    ]
    print_table(
        "Concurrent fal_subscribe jobs in one stdio server process (figures in MiB; the target is 150 MB = 143 MiB)",
        ["endpoint", "done", "max in flight", "wall s", "idle", "warm", "peak in run", "after", "process peak", "<150"],
        rows,
    )
    upload = result["upload"]
    if upload:
        print_table(
            "upload_file(path=…) of a sparse file (figures in MiB; the target is 64 MB = 61 MiB)",
            ["size MiB", "seconds", "MiB/s", "RSS before", "peak", "after", "added", "<64"],
            [
                [
                    upload["size_mib"],
                    upload["seconds"],
                    upload["throughput_mib_s"],
                    upload["rss_before_mb"],
                    upload["peak_during_mb"],
                    upload["rss_after_mb"],
                    upload["added_mb"],
                    "met" if upload["met"] else "MISSED",
                ]
            ],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--upload-mib", type=int, default=1024, help="0 skips the upload")
    parser.add_argument("--skip-flux", action="store_true", help="only emulator/slow jobs")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the attribution cases")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    cases = [
        (endpoint, env)
        for endpoint, env in CASES
        if not (args.skip_flux and endpoint != "emulator/slow") and not (args.no_diagnostics and env)
    ]
    result = anyio.run(measure, args.jobs, args.upload_mib, cases)
    report(result)
    say(f"  → {write_result('memory', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
