"""The paid job's home: it imports no ``mcp`` module, it alone sends queue submits, and it runs on its own —
a fal client, a ledger view, settings — with no MCP server or Context around it."""

from __future__ import annotations

import functools
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.job_service import JobService, PaidPlan, Silent, SubmitLocks
from fal_mcp.ledger import Ledger, owned_ledger
from fal_mcp.spend import Decision
from tests.emulators import shared_emulator
from tests.fal.conftest import make_client


def test_the_job_service_imports_no_mcp() -> None:
    code = (
        "import sys, fal_mcp.job_service, fal_mcp.failures, fal_mcp.ledger\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("send", [".queue.submit(", ".runs.run(", ".runs.stream(", ".realtime.run_many("])
def test_paid_requests_are_sent_only_by_the_job_service(send: str) -> None:
    """Every paid request — queue submit, direct run, stream, realtime — goes through the JobService
    (authorized first, ledger intent before it leaves); the MCP tools never call fal's paid APIs themselves."""
    import fal_mcp

    package = Path(fal_mcp.__file__).parent
    senders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "emulator" not in path.parts and send in path.read_text()
    )
    assert senders == ["job_service.py"]


SLOW = "emulator/slow"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await anyio.to_thread.run_sync(functools.partial(Ledger.open, tmp_path / "ledger.sqlite3"))
    async with opened:
        yield opened


def service(
    emulator: EmulatorServer, ledger: Ledger | None, locks: SubmitLocks, fal: Any, **settings: Any
) -> JobService:
    return JobService(
        fal=fal,
        ledger=owned_ledger(ledger, "alice", failure="no ledger in this test"),
        settings=Settings(**settings),
        progress=Silent(),
        tool="test",
        locks=locks,
    )


@pytest.mark.anyio
async def test_identical_calls_through_the_service_pay_once_and_both_get_the_result(
    emulator: EmulatorServer, ledger: Ledger
) -> None:
    data = {"seconds": 0.2, "steps": 1, "case": "job-service-once"}
    locks = SubmitLocks()
    asked: list[str] = []

    async def approve(plan: PaidPlan, decision: Decision) -> None:
        asked.append(decision.reason)

    before = emulator.state.submissions.total()
    async with make_client(emulator) as fal:
        jobs = service(emulator, ledger, locks, fal, confirm_above_usd=0.0)  # every new charge asks
        answers: list[tuple[str, bool]] = []

        async def one() -> None:
            plan = await jobs.plan(SLOW, [data], roots=())
            answers.append(await jobs.reuse_or_submit(plan, approve=approve, fresh=False))

        async with anyio.create_task_group() as both:
            both.start_soon(one)
            both.start_soon(one)
        assert emulator.state.submissions.total() == before + 1 and len(asked) == 1  # the re-attach asks nothing
        assert sorted(reattached for _id, reattached in answers) == [False, True]
        assert answers[0][0] == answers[1][0]
        request_id = answers[0][0]
        outcome = await jobs.wait(SLOW, request_id, 30)
        assert outcome.done
        await jobs.result(SLOW, request_id)
    record = await owned_ledger(ledger, "alice").get(request_id)
    assert record is not None and record.status == "COMPLETED" and record.origin_tool == "test"


async def never_asked(plan: PaidPlan, decision: Decision) -> None:
    raise AssertionError(f"no limit is set, yet approval was asked: {decision}")


@pytest.mark.anyio
async def test_without_a_ledger_the_service_still_runs_the_job(emulator: EmulatorServer) -> None:
    data = {"seconds": 0.1, "steps": 1, "case": "job-service-no-ledger"}
    async with make_client(emulator) as fal:
        jobs = service(emulator, None, SubmitLocks(), fal)
        handle = await jobs.submit(await jobs.plan(SLOW, [data], roots=()), approve=never_asked)
        assert (await jobs.wait(SLOW, handle.request_id, 30)).done
        assert isinstance(await jobs.result(SLOW, handle.request_id), dict)


class Recorded:
    """Progress that keeps what it was told."""

    steps: tuple[float, float] | None = None

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def report(self, message: str, *, steps: tuple[float, float] | None = None) -> None:
        self.messages.append(message)

    def heartbeat(self) -> Any:
        return Silent().heartbeat()


@pytest.mark.anyio
async def test_stream_and_realtime_run_through_the_service_and_land_on_the_ledger(
    emulator: EmulatorServer, ledger: Ledger
) -> None:
    """No MCP around: the service authorizes, sends, reports each partial or output, and records the call."""
    progress = Recorded()
    story = {"prompt": "tell me a story", "model": "google/gemini-2.5-flash"}
    frames = [{"prompt": "a red cube", "seed": 1}, {"prompt": "a cat", "seed": 2}]
    async with make_client(emulator) as fal:
        jobs = service(emulator, ledger, SubmitLocks(), fal)
        jobs.progress = progress
        streamed = await jobs.stream(await jobs.plan("openrouter/router", [story], roots=()), approve=never_asked)
        assert streamed.events >= 2 and streamed.last["partial"] is False and streamed.last["output"]
        told = len(progress.messages)
        assert told >= streamed.events
        outputs = await jobs.realtime(
            await jobs.plan("fal-ai/fast-lcm-diffusion", frames, roots=()), approve=never_asked
        )
        assert [o.get("seed") for o in outputs] == [1, 2]
        assert progress.messages[told:][-2:] == ["output 1/2", "output 2/2"]
    records = await owned_ledger(ledger, "alice").list()
    assert sorted((r.endpoint_id, r.status) for r in records) == [
        ("fal-ai/fast-lcm-diffusion", "COMPLETED"),
        ("openrouter/router", "COMPLETED"),
    ]


@pytest.mark.anyio
async def test_the_service_refuses_or_asks_before_uploading_or_sending_anything(
    emulator: EmulatorServer, ledger: Ledger, tmp_path: Path
) -> None:
    """Over the per-call limit: refused without asking. Needing approval and declined: nothing uploaded, nothing
    submitted, nothing on the ledger. Approved: the local file is uploaded, then the job sent once."""
    from fal_mcp.failures import ToolFailure

    (tmp_path / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    data = {"image_url": str(tmp_path / "face.png"), "prompt": "a portrait", "case": uuid.uuid4().hex}
    endpoint = "fal-ai/flux/dev/image-to-image"
    decisions: list[str] = []

    async def decline(plan: PaidPlan, decision: Decision) -> None:
        decisions.append(decision.verdict.name)
        raise ToolFailure("declined", kind="declined")

    async def accept(plan: PaidPlan, decision: Decision) -> None:
        decisions.append(decision.verdict.name)

    async with make_client(emulator) as fal:
        files_before, sent_before = set(emulator.state.files._files), emulator.state.submissions.total()
        over = service(emulator, ledger, SubmitLocks(), fal, max_cost_usd=0.000001)
        with pytest.raises(ToolFailure) as refused:
            await over.submit(await over.plan(endpoint, [data], roots=(tmp_path,)), approve=accept)
        assert refused.value.kind == "cost_limit" and decisions == []
        asking = service(emulator, ledger, SubmitLocks(), fal, confirm_above_usd=0.0)
        with pytest.raises(ToolFailure, match="declined"):
            await asking.submit(await asking.plan(endpoint, [data], roots=(tmp_path,)), approve=decline)
        assert set(emulator.state.files._files) == files_before  # no upload before approval
        assert emulator.state.submissions.total() == sent_before and await owned_ledger(ledger, "alice").list() == []
        handle = await asking.submit(await asking.plan(endpoint, [data], roots=(tmp_path,)), approve=accept)
        assert decisions == ["ASK", "ASK"] and handle.request_id
        assert len(set(emulator.state.files._files) - files_before) == 1
        assert emulator.state.submissions.total() == sent_before + 1
