"""A cancelled job is reported as cancelled — never as failed — by every tool and on the ledger.

fal reports a cancelled request as ``COMPLETED`` with ``error_type: client_cancelled`` and answers its
result with 499 (the emulator does the same, over real HTTP); our tools name that state CANCELLED.
"""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.server.app import FalMCPServer
from tests.server.helpers import call, error_of, eventually, structured

pytestmark = pytest.mark.anyio

SLOW = {"seconds": 300, "steps": 30}


def submissions(emulator: EmulatorServer) -> int:
    return sum(emulator.state.submissions.values())


async def _running(client: Client, request_id: str) -> None:
    async def running() -> bool:
        status = structured(await call(client, "queue_status", {"request_id": request_id}))
        return status["status"] == "IN_PROGRESS"

    await eventually(running)


async def _ledger_status(client: Client, request_id: str) -> str:
    jobs = structured(await call(client, "jobs_list", {}))["jobs"]
    return next(j["status"] for j in jobs if j["request_id"] == request_id)


async def test_a_cancelled_running_job_is_cancelled_in_status_result_and_ledger(
    server: FalMCPServer, emulator: EmulatorServer
) -> None:
    async with Client(server) as client:
        submitted = structured(await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": SLOW}))
        request_id = submitted["request_id"]
        await _running(client, request_id)
        cancelled = structured(await call(client, "queue_cancel", {"request_id": request_id}))
        assert cancelled["outcome"] == "CANCELLATION_REQUESTED"

        async def finished() -> bool:
            status = structured(await call(client, "queue_status", {"request_id": request_id}))
            return status["status"] not in ("IN_QUEUE", "IN_PROGRESS")

        await eventually(finished)
        status = structured(await call(client, "queue_status", {"request_id": request_id}))
        assert status["status"] == "CANCELLED" and status["error_type"] == "client_cancelled"

        result = await call(client, "queue_result", {"request_id": request_id})
        error = error_of(result)
        assert error["kind"] == "cancelled" and error["request_id"] == request_id
        assert await _ledger_status(client, request_id) == "CANCELLED"


async def test_fal_subscribe_whose_job_is_cancelled_says_so_and_a_new_call_runs_again(
    server: FalMCPServer, emulator: EmulatorServer
) -> None:
    data = {**SLOW, "label": "cancel-me"}
    async with Client(server) as client, anyio.create_task_group() as tg:
        outcome: dict = {}

        async def subscribe() -> None:
            outcome["result"] = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})

        before = submissions(emulator)
        tg.start_soon(subscribe)

        async def submitted() -> bool:
            jobs = structured(await call(client, "jobs_list", {}))["jobs"]
            return bool(jobs) and jobs[0]["request_id"] is not None and jobs[0]["status"] == "IN_PROGRESS"

        await eventually(submitted)
        request_id = structured(await call(client, "jobs_list", {}))["jobs"][0]["request_id"]
        await call(client, "queue_cancel", {"request_id": request_id})
        await eventually(lambda: _done(outcome))
        error = error_of(outcome["result"])
        assert error["kind"] == "cancelled" and error["request_id"] == request_id
        assert await _ledger_status(client, request_id) == "CANCELLED"
        assert submissions(emulator) == before + 1

        # The cancelled job is not re-attached to: the same call pays for a new run, once.
        args = {"endpoint_id": "emulator/slow", "input": data, "wait_seconds": 0}
        again = structured(await call(client, "fal_subscribe", args))
        assert again["request_id"] != request_id and not again["reattached"]
        assert submissions(emulator) == before + 2
        await call(client, "queue_cancel", {"request_id": again["request_id"]})


async def _done(outcome: dict) -> bool:
    return "result" in outcome


async def test_a_job_cancelled_elsewhere_or_failed_is_recorded_by_queue_status(
    server: FalMCPServer, emulator: EmulatorServer
) -> None:
    """Cancelled from another client (fal's dashboard, another agent) or failed: queue_status alone puts the
    end on the ledger, so jobs_list stops calling it running."""
    from tests.fal.conftest import make_client

    async with Client(server) as client:
        doomed = structured(await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": SLOW}))
        failing = {"seconds": 0.2, "steps": 1, "fail": True}
        broken = structured(await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": failing}))
        await _running(client, doomed["request_id"])
        async with make_client(emulator) as elsewhere:
            await elsewhere.queue.cancel("emulator/slow", doomed["request_id"])

        async def ended(request_id: str) -> bool:
            status = structured(await call(client, "queue_status", {"request_id": request_id}))
            return status["status"] not in ("IN_QUEUE", "IN_PROGRESS")

        await eventually(lambda: ended(doomed["request_id"]))
        await eventually(lambda: ended(broken["request_id"]))
        assert await _ledger_status(client, doomed["request_id"]) == "CANCELLED"
        assert await _ledger_status(client, broken["request_id"]) == "FAILED"
