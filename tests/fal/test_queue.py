"""QueueAPI against the emulator over loopback: submit, status, stream, wait, result, cancel."""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.faults import FaultConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import (
    FalAPIError,
    FalConnectionError,
    NotFoundError,
    ServerError,
    StartTimeoutError,
    SubmitOutcomeUnknownError,
    ValidationError,
)
from fal_mcp.fal.models import CancelOutcome, Completed, InProgress, JobHandle, Queued, WaitEvent
from fal_mcp.fal.retry import RetryPolicy
from tests.fal.conftest import MakeEmulator, make_client

pytestmark = pytest.mark.anyio

SLOW = "emulator/slow"


async def collect(fal: FalClient, endpoint_id: str, request_id: str, **kwargs: Any) -> list[WaitEvent]:
    async with aclosing(fal.queue.wait(endpoint_id, request_id, **kwargs)) as events:
        return [event async for event in events]


def log_lines(events: list[WaitEvent]) -> list[str]:
    return [entry.message for event in events if not isinstance(event, Queued) for entry in event.logs]


async def test_submit_status_result(fal: FalClient) -> None:
    handle = await fal.queue.submit(SLOW, {"seconds": 5, "steps": 2})
    base = f"{fal.hosts.queue}/emulator/slow/requests/{handle.request_id}"
    assert (handle.response_url, handle.status_url, handle.cancel_url) == (base, f"{base}/status", f"{base}/cancel")
    assert handle.endpoint_id == SLOW and handle.queue_position == 0 and not handle.reconciled

    status = await fal.queue.status(SLOW, handle.request_id)
    assert status.request_id == handle.request_id
    assert status.status in ("IN_QUEUE", "IN_PROGRESS")

    await collect(fal, SLOW, handle.request_id)
    done = await fal.queue.status(SLOW, handle.request_id, logs=True)
    assert done.completed and not done.failed
    assert [entry.message for entry in done.logs or []] == ["step 1/2", "step 2/2"]
    assert done.metrics["inference_time"] > 0
    assert (await fal.queue.status(SLOW, handle.request_id, logs=False)).logs is None
    assert await fal.queue.result(SLOW, handle.request_id) == {
        "steps": 2,
        "seconds": 5,
        "message": "Slept 5 seconds in 2 steps",
    }


async def test_wait_reports_real_queue_positions_then_each_log_once(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with make_client(server) as fal:
        handles = [await fal.queue.submit(SLOW, {"seconds": 15, "steps": 3, "n": n}) for n in range(3)]
        assert [h.queue_position for h in handles] == [0, 0, 1]  # the first starts at once
        events = await collect(fal, SLOW, handles[2].request_id)

    positions = [e.position for e in events if isinstance(e, Queued)]
    assert positions[0] in (1, 0) and positions[-1] == 0 and positions == sorted(positions, reverse=True)
    assert 1 in positions  # it really waited behind two jobs
    kinds = [type(e) for e in events]
    assert kinds.index(InProgress) > kinds.index(Queued) and kinds[-1] is Completed
    assert log_lines(events) == ["step 1/3", "step 2/3", "step 3/3"]
    assert all(e.request_id == handles[2].request_id for e in events)


async def test_polling_wait_dedupes_the_moving_log_window(fal: FalClient) -> None:
    handle = await fal.queue.submit(SLOW, {"seconds": 10, "steps": 5})
    events = await collect(fal, SLOW, handle.request_id, stream=False, poll_interval=0.01)
    assert log_lines(events) == [f"step {i}/5" for i in range(1, 6)]
    assert isinstance(events[-1], Completed) and not events[-1].failed


async def test_invalid_input_completes_failed_and_result_replays_field_errors(fal: FalClient) -> None:
    handle = await fal.queue.submit("emulator/strict", {"num_images": 9, "style": "oil", "width": 100})
    events = await collect(fal, "emulator/strict", handle.request_id)
    final = events[-1]
    assert isinstance(final, Completed) and final.error is None  # as on fal: a model's 422 is at the result only

    with pytest.raises(ValidationError) as caught:
        await fal.queue.result("emulator/strict", handle.request_id)
    error = caught.value
    assert error.status_code == 422 and error.request_id == handle.request_id
    by_field = {e.field_path: e for e in error.errors}
    assert set(by_field) == {"prompt", "num_images", "style", "width"}
    assert by_field["prompt"].type == "missing"
    assert by_field["num_images"].type == "less_than_equal" and by_field["num_images"].ctx == {"le": 4}
    assert by_field["style"].type == "one_of"
    assert by_field["width"].type == "image_too_small"


async def test_request_error_is_replayed_with_its_type(fal: FalClient) -> None:
    data = {"seconds": 1, "steps": 1, "fail": True, "fail_with": "runner_disconnected"}
    handle = await fal.queue.submit(SLOW, data)
    events = await collect(fal, SLOW, handle.request_id)
    final = events[-1]
    assert isinstance(final, Completed) and final.error_type == "runner_disconnected" and final.error
    with pytest.raises(ServerError) as caught:
        await fal.queue.result(SLOW, handle.request_id)
    assert caught.value.status_code == 503
    assert caught.value.error_type == "runner_disconnected"
    assert caught.value.request_id == handle.request_id


async def test_result_before_completion_says_not_completed(fal: FalClient) -> None:
    handle = await fal.queue.submit(SLOW, {"seconds": 50, "steps": 1})
    with pytest.raises(FalAPIError) as caught:
        await fal.queue.result(SLOW, handle.request_id)
    assert caught.value.error_type == "request_not_completed"
    assert caught.value.request_id == handle.request_id
    await fal.queue.cancel(SLOW, handle.request_id)


async def test_cancel_outcomes(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with make_client(server) as fal:
        blocker = await fal.queue.submit(SLOW, {"seconds": 500, "steps": 1})
        queued = await fal.queue.submit(SLOW, {"seconds": 1, "steps": 1})
        assert await fal.queue.cancel(SLOW, queued.request_id) is CancelOutcome.CANCELLATION_REQUESTED
        events = await collect(fal, SLOW, queued.request_id)
        assert isinstance(events[-1], Completed) and events[-1].error_type == "client_cancelled"
        assert await fal.queue.cancel(SLOW, queued.request_id) is CancelOutcome.ALREADY_COMPLETED
        assert await fal.queue.cancel(SLOW, blocker.request_id) is CancelOutcome.CANCELLATION_REQUESTED

        unknown = "00000000-0000-4000-8000-000000000000"
        with pytest.raises(NotFoundError) as caught:
            await fal.queue.cancel(SLOW, unknown)
        assert unknown in caught.value.message and "expired" in caught.value.message
        with pytest.raises(NotFoundError):
            await fal.queue.status(SLOW, unknown)
        with pytest.raises(NotFoundError) as caught:
            await collect(fal, SLOW, unknown)
        assert caught.value.request_id == unknown


async def test_submit_options_reach_fal(fal: FalClient, emulator: EmulatorServer) -> None:
    lifecycle = {"expiration_duration_seconds": 3600}
    handle = await fal.queue.submit(
        SLOW,
        {"seconds": 1, "steps": 1, "options": True},
        priority="low",
        hint="lora:a",
        start_timeout=30,
        store_io=False,
        object_lifecycle=lifecycle,
        webhook_url="http://127.0.0.1:9/hook",
        extra_headers={"X-Custom": "yes", "Authorization": "Key stolen"},
    )
    options = emulator.state.queue.get(handle.request_id).options
    assert (options.priority, options.runner_hint, options.start_timeout) == ("low", "lora:a", 30.0)
    assert options.store_io is False and options.lifecycle == lifecycle
    assert options.webhook_url == "http://127.0.0.1:9/hook"


async def test_start_timeout_must_exceed_one_second_and_is_checked_before_sending(fal: FalClient) -> None:
    sent = fal.http.requests_sent
    with pytest.raises(ValueError, match="start_timeout"):
        await fal.queue.submit(SLOW, {"seconds": 1}, start_timeout=1)
    with pytest.raises(ValueError, match="priority"):
        await fal.queue.submit(SLOW, {"seconds": 1}, priority="urgent")  # type: ignore[arg-type]
    assert fal.http.requests_sent == sent


async def test_start_timeout_expiry_raises_start_timeout_error(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with make_client(server) as fal:
        blocker = await fal.queue.submit(SLOW, {"seconds": 150, "steps": 1})  # 3 s
        late = await fal.queue.submit(SLOW, {"seconds": 1, "steps": 1}, start_timeout=1.2)
        events = await collect(fal, SLOW, late.request_id)
        assert isinstance(events[-1], Completed) and events[-1].error_type == "startup_timeout"
        sent = fal.http.requests_sent
        with pytest.raises(StartTimeoutError) as caught:
            await fal.queue.result(SLOW, late.request_id)
        assert caught.value.request_id == late.request_id
        assert fal.http.requests_sent == sent + 1  # the caller's own start deadline: never retried
        await fal.queue.cancel(SLOW, blocker.request_id)


async def test_requests_per_job_do_not_grow_with_job_length(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=4)
    async with make_client(server) as fal:
        costs = []
        for seconds in (50, 5):  # 1 s and 0.1 s, with a log line every 50 ms / 5 ms
            handle = await fal.queue.submit(SLOW, {"seconds": seconds, "steps": 20})
            before = fal.http.requests_sent
            events = await collect(fal, SLOW, handle.request_id)
            assert isinstance(events[-1], Completed) and len(log_lines(events)) == 20
            costs.append(fal.http.requests_sent - before)
    assert costs == [1, 1]  # one SSE connection for the whole wait, whatever the length


async def test_completion_surfaces_within_milliseconds(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    async with make_client(server) as fal:
        lags = []
        for n in range(3):
            handle = await fal.queue.submit(SLOW, {"seconds": 10, "steps": 2, "n": n})
            async with aclosing(fal.queue.wait(SLOW, handle.request_id)) as events:
                async for event in events:
                    if isinstance(event, Completed):
                        seen = time.time()
            completed_at = server.state.queue.get(handle.request_id).completed_at
            lags.append(seen - completed_at)
    assert max(lags) < 0.05, lags


async def test_broken_status_stream_falls_back_to_polling(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("sse_break", role="queue", path=r"/status/stream$")  # every stream breaks
    async with make_client(server) as fal:
        fal.queue.poll_interval = 0.01
        handle = await fal.queue.submit(SLOW, {"seconds": 20, "steps": 4})
        events = await collect(fal, SLOW, handle.request_id)
        streams = [f for f in server.state.faults.fired if f.kind == "sse_break"]
    assert len(streams) == fal.queue.max_stream_resumes + 1  # resumed, then gave up on the stream
    assert isinstance(events[-1], Completed) and not events[-1].failed
    assert log_lines(events) == [f"step {i}/4" for i in range(1, 5)]  # nothing lost or repeated across the switch
    assert {e.request_id for e in events} == {handle.request_id}


async def test_errors_out_of_wait_carry_the_request_id(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    async with make_client(server, retry=RetryPolicy(max_attempts=2, base_delay=0.001)) as fal:
        handle = await fal.queue.submit(SLOW, {"seconds": 500, "steps": 1})
        server.state.faults.add("drop_before", role="queue", method="GET")  # fal becomes unreachable mid-job
        with pytest.raises(FalConnectionError) as caught:
            await collect(fal, SLOW, handle.request_id)
    assert caught.value.request_id == handle.request_id  # type: ignore[attr-defined]
    assert len(server.state.faults.fired) == 2 * (fal.queue.max_stream_resumes + 2)  # stream x4, then a poll


async def test_subscribe_returns_handle_and_output(fal: FalClient) -> None:
    seen: list[WaitEvent] = []
    handle, output = await fal.queue.subscribe(SLOW, {"seconds": 2, "steps": 2}, logs=True, on_event=seen.append)
    assert output["steps"] == 2
    assert isinstance(seen[-1], Completed) and seen[-1].request_id == handle.request_id


# -- submits whose answer is lost: reconciled through fal's request history, never sent twice ------------


def submitted(server: EmulatorServer, data: dict[str, Any], endpoint_id: str = SLOW) -> int:
    return server.state.submissions[f"{endpoint_id} {input_digest(data)}"]


async def test_lost_answer_is_found_in_history_not_resent(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=1, role="queue", method="POST")
    data = {"seconds": 1, "steps": 1, "case": "drop_after"}
    async with make_client(server) as fal:
        handle = await fal.queue.submit(SLOW, data)
        assert handle.reconciled and handle.input_digest == input_digest(data)
        assert server.state.queue.get(handle.request_id) is not None
        _, output = await fal.queue.subscribe(SLOW, {"seconds": 2, "steps": 1})
        assert (await fal.queue.result(SLOW, handle.request_id))["seconds"] == 1
    assert submitted(server, data) == 1 and output["seconds"] == 2


@pytest.mark.parametrize("kind", ["drop_before", "502"])
async def test_a_failure_that_may_have_reached_fal_is_never_sent_again(make_emulator: MakeEmulator, kind: str) -> None:
    """The connection dropped after sending (or fal's edge said 502): fal may have queued it. Here it did not
    (the emulator dropped it unread), and the history says nothing: outcome unknown, sent once, never twice."""
    server = make_emulator()
    server.state.faults.add(kind, count=1, role="queue", method="POST")
    data = {"seconds": 1, "steps": 1, "case": kind}
    async with make_client(server) as fal:
        with pytest.raises(SubmitOutcomeUnknownError) as caught:
            await fal.queue.submit(SLOW, data)
        posts = [f for f in server.state.faults.fired if f.method == "POST"]
    assert "not sent again" in caught.value.message
    assert len(posts) == 1 and submitted(server, data) == 0  # one attempt on the wire, no re-submit


async def test_refused_submits_are_retried_without_history(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("429", count=1, role="queue", method="POST")
    server.state.faults.add("503", count=1, role="queue", method="POST")
    data = {"seconds": 1, "case": "refused"}
    async with make_client(server) as fal:
        handle = await fal.queue.submit(SLOW, data)
        assert fal.http.requests_sent == 3  # 429, 503 (edge page), accepted: no history lookup needed
    assert not handle.reconciled and submitted(server, data) == 1


async def test_without_reconciliation_a_lost_answer_is_outcome_unknown(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=1, role="queue", method="POST")
    data = {"seconds": 1, "case": "no-reconcile"}
    async with make_client(server) as fal:
        before = time.time()
        with pytest.raises(SubmitOutcomeUnknownError) as caught:
            await fal.queue.submit(SLOW, data, reconcile=False)
    error = caught.value
    assert error.input_digest == input_digest(data) and error.endpoint_id == SLOW
    assert before <= error.sent_at <= time.time() and "not sent again" in error.message
    assert submitted(server, data) == 1


async def test_unavailable_history_is_outcome_unknown(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=1, role="queue", method="POST")
    server.state.faults.add("503", role="platform")  # the request history is down
    data = {"seconds": 1, "case": "history-down"}
    async with make_client(server) as fal:
        with pytest.raises(SubmitOutcomeUnknownError, match="history is unavailable"):
            await fal.queue.submit(SLOW, data)
    assert submitted(server, data) == 1


async def test_identical_lost_submits_each_get_their_own_request(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=2, role="queue", method="POST")
    data = {"seconds": 1, "case": "twins"}
    async with make_client(server) as fal:
        handles: list[JobHandle] = []

        async def submit() -> None:
            handles.append(await fal.queue.submit(SLOW, data))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            tg.start_soon(submit)
    assert len({h.request_id for h in handles}) == 2 and all(h.reconciled for h in handles)
    assert submitted(server, data) == 2


async def test_known_request_ids_are_never_claimed(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    data = {"seconds": 1, "case": "someone else's"}
    async with make_client(server) as other, make_client(server) as fal:
        theirs = await other.queue.submit(SLOW, data)
        server.state.faults.add("drop_after", count=1, role="queue", method="POST")
        mine = await fal.queue.submit(SLOW, data, known_request_ids={theirs.request_id})
    assert mine.request_id != theirs.request_id and mine.reconciled
    assert submitted(server, data) == 2


async def test_lost_answer_under_lagging_history_is_outcome_unknown_until_fal_lists_it(
    make_emulator: MakeEmulator,
) -> None:
    """fal lists a request only after it finished (plus a lag): right after a lost answer it cannot be
    found, so the submit is reported as outcome unknown — never re-sent — and is found once listed."""
    server = make_emulator(history_lag_seconds=5)  # 0.1 s real at FAST's time scale
    server.state.faults.add("drop_after", count=1, role="queue", method="POST")
    data = {"seconds": 100, "steps": 1, "case": "lagging history"}  # 2 s: still running when the answer is lost
    async with make_client(server) as fal:
        with pytest.raises(SubmitOutcomeUnknownError) as caught:
            await fal.queue.submit(SLOW, data)
        assert submitted(server, data) == 1
        (request_id,) = [r.request_id for r in server.state.queue.requests_for(SLOW) if r.input == data]
        found = None
        with anyio.fail_after(10):
            while found is None:
                found = await fal.queue.find_submission(SLOW, data, since=caught.value.sent_at - 60)
                await anyio.sleep(0.05)
        assert found.request_id == request_id and (await fal.queue.result(SLOW, request_id))["seconds"] == 100
    assert submitted(server, data) == 1


@pytest.mark.parametrize("history_lag_seconds", [None, 100])  # 100: 2 s, longer than the inline look-ups
async def test_fault_soak_every_job_completes_or_is_reported_once_and_no_id_is_lost(
    make_emulator: MakeEmulator, history_lag_seconds: float | None
) -> None:
    faults = FaultConfig(
        rate=0.2,
        kinds=("429", "429_no_retry_after", "503", "drop_before", "drop_after", "sse_break", "slow"),
        roles=("queue", "platform"),
        seed=7,
        delay_seconds=0.02,
    )
    server = make_emulator(concurrency_per_app=8, faults=faults, history_lag_seconds=history_lag_seconds)
    for kind in ("drop_before", "drop_after"):  # make sure the ambiguous case is exercised whatever the RNG does
        server.state.faults.add(kind, count=2, role="queue", method="POST")
    jobs = [{"seconds": 5, "steps": 2, "job": n} for n in range(40)]
    outcomes: dict[int, tuple[JobHandle, dict[str, Any]]] = {}
    unknown: dict[int, SubmitOutcomeUnknownError] = {}

    async with make_client(server) as fal:
        fal.queue.poll_interval = 0.02

        async def run(n: int) -> None:
            try:
                outcomes[n] = await fal.queue.subscribe(SLOW, jobs[n], logs=True)
            except SubmitOutcomeUnknownError as exc:
                unknown[n] = exc

        async with anyio.create_task_group() as tg:
            for n in range(len(jobs)):
                tg.start_soon(run, n)

        assert sorted([*outcomes, *unknown]) == list(range(40))  # every job completed or was reported
        assert all(output["steps"] == 2 for _, output in outcomes.values())
        counts = [submitted(server, data) for data in jobs]
        assert all(counts[n] == 1 for n in outcomes) and max(counts) == 1  # none submitted twice
        ids = [handle.request_id for handle, _ in outcomes.values()]
        assert len(set(ids)) == len(ids) and all(server.state.queue.get(rid) is not None for rid in ids)
        fired = [f.kind for f in server.state.faults.fired]
        # No request id is lost: every reported submit that fal did queue turns up in its history.
        server.state.faults.clear()
        queued = [n for n in unknown if counts[n] == 1]
        with anyio.fail_after(10):
            for n in queued:
                found = None
                while found is None:
                    found = await fal.queue.find_submission(SLOW, jobs[n], since=unknown[n].sent_at - 60)
                    await anyio.sleep(0.02)
    assert len(unknown) >= 2  # the two forced drop_before submits at least
    if history_lag_seconds is not None:
        assert queued  # the forced drop_after ones: queued by fal, not yet listed when the answer was lost
    assert {"drop_before", "drop_after", "429", "503", "sse_break"} <= set(fired) and len(fired) >= 20, fired


async def test_find_submission_after_a_restart(emulator: EmulatorServer) -> None:
    data = {"seconds": 1, "case": "restart"}
    async with make_client(emulator) as before_restart, make_client(emulator) as after_restart:
        since = time.time()
        original = await before_restart.queue.submit(SLOW, data)
        assert await before_restart.queue.find_submission(SLOW, data, since=since) is None  # its own: claimed
        found = await after_restart.queue.find_submission(SLOW, data, since=since)
        assert found is not None and found.request_id == original.request_id and found.reconciled
        assert await after_restart.queue.find_submission(SLOW, data, since=since) is None  # handed out once
        assert await after_restart.queue.find_submission(SLOW, {"seconds": 1, "case": "other"}, since=since) is None
