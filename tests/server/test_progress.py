"""Progress with a ``total`` whenever the job reveals one, and ``progress`` strictly increasing always."""

from __future__ import annotations

import pytest
from mcp import Client

from fal_mcp.job_service import steps_in
from fal_mcp.server.app import FalMCPServer
from fal_mcp.server.progress import ProgressReporter
from tests.server.helpers import Progress, call, structured

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("step 7/28", (7, 28)),
        ("Denoising step 3 of 28", (3, 28)),
        (" 25%|##   | 7/28 [00:01<00:03,  6.50it/s]", (7, 28)),
        ("45% done", (45, 100)),
        ("fal-ai/flux/dev", None),
        ("2026/11/26 started", None),
        ("aspect 16/9", None),
        ("Generated 1 image(s) in 4 steps", None),
    ],
)
def test_steps_are_read_from_log_lines(line: str, expected: tuple[int, int] | None) -> None:
    assert steps_in(line) == expected


async def test_reporter_counts_steps_on_top_of_earlier_notifications_and_never_goes_back() -> None:
    sent = Progress()
    reporter = ProgressReporter(sent)
    await reporter.report("submitting")
    await reporter.report("queued: 2 ahead")
    await reporter.report("step 1/4", steps=(1, 4))
    for _ in range(30):  # heartbeats between two steps creep towards the next step, never reaching it
        await reporter.report("still working")
    await reporter.report("step 2/4", steps=(2, 4))
    await reporter.report("step 2/4 again", steps=(2, 4))
    await reporter.report("step 4/4", steps=(4, 4))
    await reporter.report("still working")
    await reporter.report("second pass 1/3", steps=(1, 3))  # a new count starts above where it stood
    sent.assert_strictly_increasing()
    values = [p for p, _, _ in sent.events]
    totals = [t for _, t, _ in sent.events]
    assert totals[:2] == [None, None] and values[:2] == [1, 2]
    assert totals[2] == 7 and values[2] == 4  # 3 + 1 of 4 steps; the bar runs 3 → 7
    assert all(v < 5 for v in values[3:33]) and values[33] == 5
    assert values[35] == 7 and all(v <= t for v, t in zip(values[2:36], totals[2:36], strict=True))
    assert totals[-1] == values[-1] + 2 and values[-1] > values[-2]


async def test_subscribe_progress_carries_the_jobs_step_total(server: FalMCPServer, mode: str) -> None:
    progress = Progress()
    async with Client(server, mode=mode) as client:
        args = {"endpoint_id": "emulator/slow", "input": {"seconds": 30, "steps": 6}}
        result = structured(await call(client, "fal_subscribe", args, progress))
    assert result["status"] == "COMPLETED"
    await progress.wait_until(lambda events: bool(events) and events[-1][2] == "completed")
    progress.assert_strictly_increasing()
    with_total = [(p, t, m) for p, t, m in progress.events if t is not None]
    assert with_total, progress.events
    assert len({t for _, t, _ in with_total}) == 1  # one total for the job's 6 steps
    last_progress, total, message = progress.events[-1]
    assert message == "completed" and last_progress == total  # done means the bar is full
    assert all(p <= t for p, t, _ in with_total)


async def test_realtime_progress_counts_outputs(server: FalMCPServer, mode: str) -> None:
    progress = Progress()
    inputs = [{"prompt": f"frame {i}", "seed": i} for i in range(3)]
    async with Client(server, mode=mode) as client:
        result = await call(
            client, "fal_realtime", {"endpoint_id": "fal-ai/fast-lcm-diffusion", "inputs": inputs}, progress
        )
    assert not result.is_error
    await progress.wait_until(lambda events: sum((m or "").startswith("output ") for _, _, m in events) == 3)
    progress.assert_strictly_increasing()
    outputs = [(p, t) for p, t, m in progress.events if (m or "").startswith("output ")]
    assert [p for p, _ in outputs] == [outputs[0][1] - 2, outputs[0][1] - 1, outputs[0][1]]
    assert len({t for _, t in outputs}) == 1
