"""Cheap guards of what BENCHMARKS.md measures: the design, at a small scale, with no timing assertions.

- the fault soak (every job completes, none submitted twice, no id lost) at 15 jobs;
- a job costs the same HTTP requests however long it runs (one status stream, no polling);
- the first ``tools/list`` over stdio imports nothing heavy, and nothing the bare SDK does not besides
  fal-mcp's own light modules;
- memory: 40 concurrent jobs and a 100 MiB upload (multipart) stay far inside the targets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks._common import ROOT, counting_emulator, server_env
from benchmarks._mcp import mcp_client
from benchmarks.cold_start import time_first_tools_list
from benchmarks.completion import count_requests
from benchmarks.faults import SoakConfig, soak
from benchmarks.memory import measure_jobs, measure_upload
from fal_mcp.emulator.config import EmulatorConfig

pytestmark = pytest.mark.anyio


async def test_fault_soak_every_job_completes_or_is_reported_once_and_is_listed(tmp_path: Path) -> None:
    config = SoakConfig(
        jobs=15, rate=0.2, seed=3, time_scale=0.02, job_seconds=10, short_wait=0.1, slow_delay=0.1, retry_after=0
    )
    emulator, counter = counting_emulator(config.emulator_config(concurrency_per_app=4))
    with emulator:
        async with mcp_client("memory", emulator.base_url, tmp_path / "state") as client:
            result = await soak(client, emulator, counter, config)
    assert result["problems"] == []
    assert result["completed"] + result["reported_outcome_unknown"] == 15 and result["max_submissions_per_body"] == 1
    assert result["reported_outcome_unknown"] >= 1  # the certain drop_before on a submit: reported, not re-sent
    assert result["ids_in_jobs_list"] == result["requests_at_emulator"] >= result["completed"]
    # The faults that could double-submit or lose an id really fired, and short waits were resumed.
    fired = result["faults_fired"]
    assert fired["drop_after"] >= 1 and fired["drop_before"] >= 2 and fired["sse_break"] >= 1, fired
    assert result["faults_on_submit"] >= 4
    assert result["resumed_with_queue_result"] >= 1


async def test_requests_per_job_do_not_grow_with_its_length(tmp_path: Path) -> None:
    emulator, counter = counting_emulator(EmulatorConfig(time_scale=0.02, concurrency_per_app=4))
    with emulator:
        async with mcp_client("memory", emulator.base_url, tmp_path / "state") as client:
            first = await count_requests(client, counter, [{"seconds": 1, "steps": 5}])
            short = await count_requests(client, counter, [{"seconds": 5, "steps": 5}, {"seconds": 5.5, "steps": 5}])
            long = await count_requests(client, counter, [{"seconds": 50, "steps": 5}, {"seconds": 50.5, "steps": 5}])
    assert first["submit"] == 1 and first["catalog"] >= 1  # the schema, fetched once and cached
    # 0.1 s vs 1 s jobs (twice the client's first poll interval, were it polling)
    assert long == short == {"submit": 2, "status_stream": 2, "result": 2}


_DUMP_MODULES_AT_EXIT = (
    "import atexit, json, sys\natexit.register(lambda: open({out!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
)


def _modules_after_first_list(tmp_path: Path, name: str, code: str) -> tuple[set[str], int]:
    """Run ``code`` as a stdio server, do initialize + tools/list, close it; what it had imported by then."""
    out = tmp_path / f"{name}.json"
    script = _DUMP_MODULES_AT_EXIT.format(out=str(out)) + code
    measured = time_first_tools_list([sys.executable, "-c", script], server_env(tmp_path, key=None), tmp_path)
    return set(json.loads(out.read_text())), measured["tools"]


def test_first_tools_list_imports_stay_light(tmp_path: Path) -> None:
    ours, tools = _modules_after_first_list(tmp_path, "fal_mcp", "from fal_mcp.cli import main\nsys.exit(main([]))")
    assert tools == 12 and "fal_mcp.server.app" in ours
    heavy = {
        "PIL",
        "jsonschema",
        "sqlite3",
        "msgpack",
        "fal_mcp.emulator",
        "fal_mcp.fal.client",
        "fal_mcp.server.tools",
        "fal_mcp.ledger",
    }
    assert heavy.isdisjoint(ours), sorted(heavy & ours)
    # cryptography is imported by the SDK itself (mcp.server.request_state): compare with its floor.
    baseline = ROOT / "benchmarks" / "baseline_server.py"
    floor, _ = _modules_after_first_list(
        tmp_path, "floor", f"import runpy\nrunpy.run_path({str(baseline)!r}, run_name='__main__')"
    )
    # Our stdio transport's stdin thread and signal handling (fal_mcp/server/stdio.py) use two small anyio modules;
    # the in-chat gallery is the SDK's own small Apps extension module (~1 ms, no dependencies of its own).
    allowed = {"anyio.from_thread", "anyio._core._signals", "mcp.server.apps"}
    extra = {module.split(".")[0] for module in ours - floor - allowed}
    assert extra <= {"fal_mcp", "structlog", "argparse"}, sorted(ours - floor)


async def test_memory_stays_bounded_at_reduced_scale(tmp_path: Path) -> None:
    emulator, counter = counting_emulator(EmulatorConfig(time_scale=0.1, concurrency_per_app=64))
    with emulator:
        jobs = await measure_jobs(emulator, counter, "emulator/slow", 40, tmp_path)
        upload = await measure_upload(emulator, 100, tmp_path)  # multipart: above the 90 MiB threshold
    assert jobs["completed"] == 40 and jobs["max_in_flight_at_emulator"] >= 20
    assert jobs["process_peak_mb"] < 150
    assert jobs["peak_during_run_mb"] - jobs["rss_after_warmup_mb"] < 30  # ~0.1 MiB a job
    assert upload["added_mb"] < 64  # a file read whole would add 100
