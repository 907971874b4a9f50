"""The paid job's home: it imports no ``mcp`` module, it alone sends queue submits, and it runs on its own —
a fal client, a ledger view, settings — with no MCP server or Context around it."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.job_service import JobService, Silent, SubmitLocks
from fal_mcp.ledger import Ledger, owned_ledger
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


def service(emulator: EmulatorServer, ledger: Ledger | None, locks: SubmitLocks, fal: Any) -> JobService:
    return JobService(
        fal=fal,
        ledger=owned_ledger(ledger, "alice", failure="no ledger in this test"),
        settings=Settings(),
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
    authorized = 0

    async def authorize() -> dict[str, Any]:
        nonlocal authorized
        authorized += 1
        return data

    before = emulator.state.submissions.total()
    async with make_client(emulator) as fal:
        jobs = service(emulator, ledger, locks, fal)
        answers: list[tuple[str, bool]] = []

        async def one() -> None:
            answers.append(
                await jobs.reuse_or_submit(
                    SLOW, digest="d-once", cost_estimate_usd=0.01, authorize=authorize, fresh=False
                )
            )

        async with anyio.create_task_group() as both:
            both.start_soon(one)
            both.start_soon(one)
        assert emulator.state.submissions.total() == before + 1 and authorized == 1
        assert sorted(reattached for _id, reattached in answers) == [False, True]
        assert answers[0][0] == answers[1][0]
        request_id = answers[0][0]
        outcome = await jobs.wait(SLOW, request_id, 30)
        assert outcome.done
        await jobs.result(SLOW, request_id)
    record = await owned_ledger(ledger, "alice").get(request_id)
    assert record is not None and record.status == "COMPLETED" and record.origin_tool == "test"


async def _ready(data: dict[str, Any]) -> dict[str, Any]:
    return data


@pytest.mark.anyio
async def test_without_a_ledger_the_service_still_runs_the_job(emulator: EmulatorServer) -> None:
    data = {"seconds": 0.1, "steps": 1, "case": "job-service-no-ledger"}
    async with make_client(emulator) as fal:
        jobs = service(emulator, None, SubmitLocks(), fal)
        handle = await jobs.submit(SLOW, authorize=lambda: _ready(data))
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
        streamed = await jobs.stream("openrouter/router", authorize=lambda: _ready(story), cost_estimate_usd=None)
        assert streamed.events >= 2 and streamed.last["partial"] is False and streamed.last["output"]
        told = len(progress.messages)
        assert told >= streamed.events
        outputs = await jobs.realtime(
            "fal-ai/fast-lcm-diffusion", authorize=lambda: _ready(frames), cost_estimate_usd=0.002
        )
        assert [o.get("seed") for o in outputs] == [1, 2]
        assert progress.messages[told:][-2:] == ["output 1/2", "output 2/2"]
    records = await owned_ledger(ledger, "alice").list()
    assert sorted((r.endpoint_id, r.status) for r in records) == [
        ("fal-ai/fast-lcm-diffusion", "COMPLETED"),
        ("openrouter/router", "COMPLETED"),
    ]
