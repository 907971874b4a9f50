"""A submit whose answer is lost is never paid twice: outcome unknown, settled in the background, shown in jobs_list.

Against the emulator's realistic request history: a request is listed only once it has finished, after a lag.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.hosts import FalHosts
from tests.emulators import FAST
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio
SLOW = "emulator/slow"


@pytest.fixture
def lagging() -> Iterator[EmulatorServer]:
    """fal's history as its spec describes it: finished requests only, 10 simulated seconds (0.2 s) late."""
    from dataclasses import replace

    with EmulatorServer(replace(FAST, history_lag_seconds=10, concurrency_per_app=16)) as server:
        yield server


@pytest.fixture
def lag_settings(settings: Settings, lagging: EmulatorServer) -> Settings:
    return settings.model_copy(
        update={"hosts": FalHosts.for_base_url(lagging.base_url), "reconcile_first_delay_seconds": 0.05}
    )


def submissions(emulator: EmulatorServer, data: dict) -> int:
    return emulator.state.submissions[f"{SLOW} {input_digest(data)}"]


async def jobs_for(client: Client) -> list[dict]:
    return structured(await call(client, "jobs_list", {"endpoint_id": SLOW}))["jobs"]


async def test_lost_answer_is_reported_not_resent_and_jobs_list_shows_the_outcome(
    lag_settings: Settings, lagging: EmulatorServer
) -> None:
    lagging.state.faults.add("drop_after", count=1, role="queue", method="POST")
    data = {"seconds": 120, "steps": 2, "case": "lost answer"}  # 2.4 s: longer than the inline look-ups
    async with Client(make_server(lag_settings)) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": SLOW, "input": data})
        error = error_of(result)
        text = text_of(result)
        assert error["kind"] == "submit_outcome_unknown"
        assert "not sent again" in text and "jobs_list" in text and error["job_id"]
        assert submissions(lagging, data) == 1

        (job,) = await jobs_for(client)
        assert job["status"] == "UNKNOWN" and job["request_id"] is None and job["job_id"] == error["job_id"]
        assert "outcome unknown" in job["error"]

        # The same input again is refused while the first one's outcome is unknown: it may have been charged.
        again = await call(client, "fal_subscribe", {"endpoint_id": SLOW, "input": data})
        assert error_of(again)["kind"] == "submit_outcome_unknown" and "fresh=true" in text_of(again)
        assert submissions(lagging, data) == 1

        # The server keeps looking; once fal lists the finished request, jobs_list has its id and outcome.
        for _ in range(300):
            job = (await jobs_for(client))[0]
            if job["request_id"] and job["status"] == "COMPLETED":
                break
            await anyio.sleep(0.05)
        assert job["job_id"] == error["job_id"] and job["result_urls"] == [] and job["error"] is None

        # Now the identical call re-attaches to that job: its output, no second charge.
        done = await call(client, "fal_subscribe", {"endpoint_id": SLOW, "input": data})
        assert not done.is_error, text_of(done)
        assert structured(done)["request_id"] == job["request_id"] and structured(done)["reattached"]
    assert submissions(lagging, data) == 1


async def test_many_lost_answers_each_body_is_submitted_exactly_once(
    lag_settings: Settings, lagging: EmulatorServer
) -> None:
    lagging.state.faults.add("drop_after", count=4, role="queue", method="POST")
    lagging.state.faults.add("drop_before", count=2, role="queue", method="POST")
    inputs = [{"seconds": 120, "steps": 1, "case": "many", "n": n} for n in range(10)]
    errors: dict[int, dict] = {}
    async with Client(make_server(lag_settings)) as client:

        async def one(n: int) -> None:
            result = await call(client, "fal_subscribe", {"endpoint_id": SLOW, "input": inputs[n]})
            if result.is_error:
                errors[n] = error_of(result)
            else:
                assert structured(result)["status"] == "COMPLETED"

        async with anyio.create_task_group() as group:
            for n in range(len(inputs)):
                group.start_soon(one, n)
        assert len(errors) == 6 and all(e["kind"] == "submit_outcome_unknown" for e in errors.values())
        counts = [submissions(lagging, data) for data in inputs]
        assert max(counts) == 1 and sum(counts) == 8  # drop_before: dropped unread; nothing ever sent twice

        # Every job fal queued turns up in jobs_list with its request id; the two it never got stay UNKNOWN.
        for _ in range(400):
            jobs = await jobs_for(client)
            if sum(1 for j in jobs if j["request_id"] and j["status"] == "COMPLETED") == 8:
                break
            await anyio.sleep(0.05)
        assert sorted(j["status"] for j in jobs) == ["COMPLETED"] * 8 + ["UNKNOWN"] * 2
        assert len({j["request_id"] for j in jobs if j["request_id"]}) == 8
    assert [submissions(lagging, data) for data in inputs] == counts


async def test_a_direct_run_whose_answer_is_lost_is_reported_not_rerun(
    lag_settings: Settings, lagging: EmulatorServer
) -> None:
    lagging.state.faults.add("drop_after", count=1, role="run", method="POST")
    data = {"seconds": 1, "steps": 1, "case": "direct run, lost answer"}
    async with Client(make_server(lag_settings)) as client:
        result = await call(client, "fal_run", {"endpoint_id": SLOW, "input": data})
        error = error_of(result)
        assert error["kind"] == "submit_outcome_unknown" and "not sent again" in text_of(result)
        (job,) = await jobs_for(client)
        assert job["status"] == "UNKNOWN" and job["job_id"] == error["job_id"]
    assert submissions(lagging, data) == 1


async def test_a_direct_run_that_fal_answered_with_an_error_is_that_error(
    lag_settings: Settings, lagging: EmulatorServer
) -> None:
    """A 404 (or 422, 401, …) is fal's definite answer, not a lost one: its own kind, the job FAILED."""
    async with Client(make_server(lag_settings)) as client:
        result = await call(client, "fal_run", {"endpoint_id": "fal-ai/no-such-model", "input": {"prompt": "x"}})
        assert error_of(result)["kind"] == "not_found", text_of(result)
        (job,) = structured(await call(client, "jobs_list", {"endpoint_id": "fal-ai/no-such-model"}))["jobs"]
        assert job["status"] == "FAILED"


async def test_a_restarted_server_keeps_looking_for_an_earlier_lost_answer(
    lag_settings: Settings, lagging: EmulatorServer
) -> None:
    lagging.state.faults.add("drop_after", count=1, role="queue", method="POST")
    data = {"seconds": 120, "steps": 1, "case": "lost, then restarted"}
    first = make_server(lag_settings.model_copy(update={"reconcile_first_delay_seconds": 3600}))
    async with Client(first) as client:  # this process never gets to look again
        error = error_of(await call(client, "fal_subscribe", {"endpoint_id": SLOW, "input": data}))
        assert error["kind"] == "submit_outcome_unknown"
    async with Client(make_server(lag_settings)) as client:
        for _ in range(300):
            (job,) = await jobs_for(client)
            if job["request_id"] and job["status"] == "COMPLETED":
                break
            await anyio.sleep(0.05)
        assert job["job_id"] == error["job_id"] and job["status"] == "COMPLETED"
    assert submissions(lagging, data) == 1
