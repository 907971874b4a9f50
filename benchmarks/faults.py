"""Target 5: under ~20% injected faults and with fal's history lagging, every job completes or is reported,
none is submitted twice, no request id is lost.

fal-mcp (a stdio subprocess by default) runs N ``fal_subscribe`` jobs at once, each with a distinct
input, while the emulator fails ~20% of queue and request-history requests with a random mix of every
fault kind it knows: 429 with and without ``Retry-After``, ingress 502/503, dropped connections before
and after processing (a lost submit answer included), slow answers and status streams cut mid-way. Its
request history behaves as fal's spec suggests: a request is listed only once it has finished, and
``history_lag`` (simulated) seconds after that. A third of the calls get a wait shorter than their job,
so they return a running status and are resumed with ``queue_result`` — as an agent would.

A submit whose answer was lost (or that fal's edge answered 502) may have been queued: it is never sent
again, the call reports ``submit_outcome_unknown``, and the server looks for it in the background.

Checked afterwards: every job ends COMPLETED with its own output, or was reported as outcome unknown;
the emulator accepted no body twice (``state.submissions``), and each completed one exactly once; once
the background reconciliation has had its time, every request id — the returned ones and every one the
emulator holds, the reported jobs' included — is in ``jobs_list``.

    python -m benchmarks.faults [--jobs 60] [--rate 0.2] [--transport stdio|memory] [--seed 7]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from benchmarks._common import CountingApp, counting_emulator, diff_counts, print_table, say, write_result
from benchmarks._mcp import Transport, mcp_client, structured
from fal_mcp.digest import input_digest
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.faults import KINDS
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.log import configure_logging
from fal_mcp.server.errors import ERROR_META_KEY

ENDPOINT = "emulator/slow"
MAX_RESUMES = 20


@dataclass(frozen=True)
class SoakConfig:
    jobs: int = 60
    rate: float = 0.2
    seed: int = 7
    time_scale: float = 0.1  # simulated seconds x this = real seconds
    job_seconds: float = 8.0  # simulated: 0.8 s real at the default scale
    short_wait: float = 0.3  # real seconds: shorter than a job, so those calls return a running status
    slow_delay: float = 0.5
    retry_after: int = 1
    roles: tuple[str, ...] = ("queue", "platform")
    certain: bool = True  # also fire each of CERTAIN once
    history_lag: float = 10.0  # simulated seconds after a request finished before history lists it
    settle_seconds: float = 60.0  # real seconds the background reconciliation gets before the checks

    def emulator_config(self, concurrency_per_app: int = 8) -> EmulatorConfig:
        return EmulatorConfig(
            time_scale=self.time_scale, concurrency_per_app=concurrency_per_app, history_lag_seconds=self.history_lag
        )


@dataclass
class JobOutcome:
    data: dict[str, Any]
    request_ids: list[str] = field(default_factory=list)
    status: str | None = None
    output: Any = None
    resumes: int = 0
    errors: list[str] = field(default_factory=list)
    reported_unknown: bool = False  # the call said "outcome unknown": fal may or may not have queued it


def job_input(index: int, config: SoakConfig) -> dict[str, Any]:
    return {"seconds": round(config.job_seconds + index * 0.001, 3), "steps": 2}


# Fired first, once each, whatever the dice say: the cases that would double-submit or lose an id.
SUBMIT_PATH = f"^/queue/{ENDPOINT}/?$"
STREAM_PATH = r"/status/stream$"
RESULT_PATH = r"/requests/[^/]+(/response)?/?$"
CERTAIN = (
    ("drop_after", "POST", SUBMIT_PATH),  # enqueued, answer lost: reported, found later, never re-sent
    ("drop_before", "POST", SUBMIT_PATH),  # nothing enqueued, answer lost: reported, never re-sent
    ("503", "POST", SUBMIT_PATH),
    ("429_no_retry_after", "POST", SUBMIT_PATH),
    ("sse_break", "GET", STREAM_PATH),
    ("429", "GET", STREAM_PATH),
    ("drop_before", "GET", RESULT_PATH),
)


def add_faults(emulator: EmulatorServer, config: SoakConfig) -> None:
    """Each kind in ``CERTAIN`` once, then one rule over every fault kind at ``rate``, on the roles a job
    touches (queue, request history)."""
    emulator.state.faults.clear()
    emulator.state.faults.seed(config.seed)
    if config.certain:
        for kind, method, path in CERTAIN:
            emulator.state.faults.add(kind, count=1, method=method, path=path, retry_after=config.retry_after)
    emulator.state.faults.add(
        KINDS,
        probability=config.rate,
        role=config.roles,
        delay_seconds=config.slow_delay,
        retry_after=config.retry_after,
    )


async def _run_job(client: Client, index: int, config: SoakConfig) -> JobOutcome:
    outcome = JobOutcome(job_input(index, config))
    args: dict[str, Any] = {"endpoint_id": ENDPOINT, "input": outcome.data}
    if index % 3 == 0:
        args["wait_seconds"] = config.short_wait
    result = await client.call_tool("fal_subscribe", args)
    while True:
        if result.is_error:
            error = (result.meta or {}).get(ERROR_META_KEY) or {}
            outcome.errors.append(f"{error.get('kind')}: {str(error.get('message'))[:300]}")
            if error.get("kind") == "submit_outcome_unknown":
                outcome.reported_unknown = True
                return outcome
            request_id = error.get("request_id")
            if request_id is None or outcome.resumes >= MAX_RESUMES:
                return outcome
            if request_id not in outcome.request_ids:
                outcome.request_ids.append(request_id)
        else:
            job = structured(result)
            if job["request_id"] not in outcome.request_ids:
                outcome.request_ids.append(job["request_id"])
            outcome.status = job["status"]
            if job["status"] == "COMPLETED":
                outcome.output = job["output"]
                return outcome
            if outcome.resumes >= MAX_RESUMES:
                return outcome
        outcome.resumes += 1
        result = await client.call_tool("queue_result", {"request_id": outcome.request_ids[-1]})


async def _listed(client: Client) -> dict[str, str]:
    jobs = structured(await client.call_tool("jobs_list", {"endpoint_id": ENDPOINT, "limit": 200}))["jobs"]
    return {job["request_id"]: job["status"] for job in jobs if job["request_id"]}


async def _settle(client: Client, emulator: EmulatorServer, config: SoakConfig) -> float:
    """Wait (bounded) until every request the emulator holds is in ``jobs_list``: the background
    reconciliation of reported submits finds them once fal's history lists them. Returns the wait."""
    started = time.monotonic()
    with anyio.move_on_after(config.settle_seconds):
        while True:
            listed = await _listed(client)
            if all(r.request_id in listed for r in emulator.state.queue.requests_for(ENDPOINT)):
                break
            await anyio.sleep(0.25)
    return round(time.monotonic() - started, 2)


async def soak(client: Client, emulator: EmulatorServer, counter: CountingApp, config: SoakConfig) -> dict[str, Any]:
    """Run the jobs under faults, then check every promise; the faults are cleared before the checks."""
    add_faults(emulator, config)
    before = counter.snapshot()
    outcomes: list[JobOutcome] = [JobOutcome({})] * config.jobs
    started = time.monotonic()

    async def one(index: int) -> None:
        outcomes[index] = await _run_job(client, index, config)

    async with anyio.create_task_group() as tg:
        for index in range(config.jobs):
            tg.start_soon(one, index)
    elapsed = time.monotonic() - started
    fired = collections.Counter(f.kind for f in emulator.state.faults.fired)
    fired_on_submit = sum(1 for f in emulator.state.faults.fired if f.method == "POST" and "/requests/" not in f.path)
    emulator.state.faults.clear()
    served = diff_counts(counter.snapshot(), before)
    settle_wait = await _settle(client, emulator, config)

    ledger = await _listed(client)
    at_emulator = [r.request_id for r in emulator.state.queue.requests_for(ENDPOINT)]
    submissions = [emulator.state.submissions[f"{ENDPOINT} {input_digest(o.data)}"] for o in outcomes]
    returned_ids = [rid for o in outcomes for rid in o.request_ids]

    problems: list[str] = []
    for index, o in enumerate(outcomes):
        if o.reported_unknown:
            continue  # reported: the agent was told; the checks below make sure nothing was paid twice or lost
        if o.status != "COMPLETED" or not isinstance(o.output, dict) or o.output.get("seconds") != o.data["seconds"]:
            problems.append(f"job {index} ended {o.status} ({'; '.join(o.errors) or 'no error'})")
        if len(o.request_ids) != 1:
            problems.append(f"job {index} saw request ids {o.request_ids}")
        if submissions[index] != 1:
            problems.append(f"completed job {index} was submitted {submissions[index]} times")
    problems += [f"job {i} was submitted {n} times" for i, n in enumerate(submissions) if n > 1]
    if len(at_emulator) > config.jobs:
        problems.append(f"the emulator holds {len(at_emulator)} requests for {config.jobs} jobs")
    problems += [f"request {rid} (emulator) is not in jobs_list" for rid in at_emulator if rid not in ledger]
    problems += [f"request {rid} (returned) is not in jobs_list" for rid in returned_ids if rid not in ledger]
    problems += [f"jobs_list shows {r} as {s}" for r, s in ledger.items() if r in returned_ids and s != "COMPLETED"]

    faulted = sum(fired.values())
    touched = sum(n for kind, n in served.items() if kind in ("submit", "status", "status_stream", "result", "history"))
    return {
        "jobs": config.jobs,
        "completed": sum(1 for o in outcomes if o.status == "COMPLETED"),
        "reported_outcome_unknown": sum(1 for o in outcomes if o.reported_unknown),
        "reported_then_found": sum(
            1 for o, n in zip(outcomes, submissions, strict=True) if o.reported_unknown and n == 1
        ),
        "reconcile_wait_seconds": settle_wait,
        "resumed_with_queue_result": sum(1 for o in outcomes if o.resumes),
        "resumes": sum(o.resumes for o in outcomes),
        "tool_errors_seen": sum(len(o.errors) for o in outcomes),
        "max_submissions_per_body": max(submissions, default=0),
        "requests_at_emulator": len(at_emulator),
        "ids_in_jobs_list": sum(1 for rid in at_emulator if rid in ledger),
        "faults_fired": dict(sorted(fired.items())),
        "faults_on_submit": fired_on_submit,
        "requests_served": served,
        "fault_rate_observed": round(faulted / touched, 3) if touched else 0.0,
        "wall_seconds": round(elapsed, 2),
        "problems": problems,
        "met": not problems,
    }


async def measure(config: SoakConfig, transport: Transport) -> dict[str, Any]:
    emulator, counter = counting_emulator(config.emulator_config())
    with tempfile.TemporaryDirectory(prefix="fal-mcp-bench-faults-") as tmp, emulator:
        async with mcp_client(transport, emulator.base_url, Path(tmp) / "state") as client:
            result = await soak(client, emulator, counter, config)
    return {
        "method": (
            f"{transport} server, emulator in-process; one fault rule over all kinds {list(KINDS)} at "
            f"p={config.rate} on roles {list(config.roles)}; request history lists a request only once it has "
            f"finished, {config.history_lag} simulated s later; every third call waits {config.short_wait}s and is "
            "resumed with queue_result"
        ),
        "config": config.__dict__,
        "transport": transport,
        **result,
        "target": (
            "every job COMPLETED or reported as outcome unknown, no body submitted twice, every request id "
            "(returned or held by the emulator) in jobs_list"
        ),
    }


def report(result: dict[str, Any]) -> None:
    print_table(
        f"Fault soak ({result['transport']}): {result['jobs']} fal_subscribe jobs, p={result['config']['rate']}",
        [
            "completed",
            "reported unknown (then found)",
            "resumed",
            "max submits/body",
            "emulator reqs",
            "ids in jobs_list",
            "fault rate",
            "wall s",
        ],
        [
            [
                f"{result['completed']}/{result['jobs']}",
                f"{result['reported_outcome_unknown']} ({result['reported_then_found']})",
                result["resumed_with_queue_result"],
                result["max_submissions_per_body"],
                result["requests_at_emulator"],
                result["ids_in_jobs_list"],
                result["fault_rate_observed"],
                result["wall_seconds"],
            ]
        ],
    )
    say(f"  faults fired: {result['faults_fired']} ({result['faults_on_submit']} on submits)")
    say(f"  requests served: {result['requests_served']}")
    say(f"  background reconciliation listed every queued request after {result['reconcile_wait_seconds']} s")
    for problem in result["problems"][:20]:
        say(f"  PROBLEM: {problem}")
    say(f"  target ({result['target']}): {'met' if result['met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--transport", choices=("stdio", "memory"), default="stdio")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    config = SoakConfig(jobs=args.jobs, rate=args.rate, seed=args.seed)
    result = anyio.run(measure, config, args.transport)
    report(result)
    say(f"  → {write_result('faults', result)}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
