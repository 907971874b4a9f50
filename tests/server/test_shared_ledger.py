"""One ledger file, several server processes, bad days (issue 9 #6, #7, #15; issue 10 #6).

Two real ``fal-mcp`` stdio processes share one ledger against one emulator and never both pay for one
identical call; a locked, damaged or half-migrated ledger never takes a server down, and a ledger that
was locked at first comes back when the lock is released.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.ledger import Ledger
from fal_mcp.server import state as state_module
from fal_mcp.server.state import ServerState
from tests.server.conftest import TEST_KEY, make_server, owner_of
from tests.server.helpers import call, error_of, eventually, structured, text_of
from tests.server.test_jobs import submissions

pytestmark = pytest.mark.anyio


def stdio_server(emulator: EmulatorServer, ledger: Path, home: Path) -> StdioServerParameters:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env.update(
        FAL_KEY=TEST_KEY,
        FAL_MCP_BASE_URL=emulator.base_url,
        FAL_MCP_LEDGER=str(ledger),
        FAL_MCP_CACHE_DIR=str(home / "cache"),
        FAL_MCP_HEARTBEAT_SECONDS="0.25",
        FAL_MCP_THUMBNAILS="0",
    )
    return StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp"], env=env, cwd=str(home))


async def test_two_server_processes_on_one_ledger_pay_once(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Identical fal_subscribe calls sent at the same moment from two processes: one submission per round."""
    ledger = tmp_path / "shared" / "ledger.sqlite3"
    rounds = 3
    async with (
        Client(stdio_server(emulator, ledger, tmp_path / "a")) as first,
        Client(stdio_server(emulator, ledger, tmp_path / "b")) as second,
    ):
        for round_ in range(rounds):
            data = {"seconds": 10, "steps": 2, "fail": False, "tag": f"{uuid.uuid4().hex}-{round_}"}
            args = {"endpoint_id": "emulator/slow", "input": data}
            answers: list[dict] = []

            async def one(client: Client, args: dict = args, answers: list[dict] = answers) -> None:
                result = await call(client, "fal_subscribe", args)
                assert not result.is_error, text_of(result)
                answers.append(structured(result))

            async with anyio.create_task_group() as group:
                group.start_soon(one, first)
                group.start_soon(one, second)
            assert submissions(emulator, "emulator/slow", data) == 1, f"round {round_} paid twice"
            assert len({a["request_id"] for a in answers}) == 1
            assert sorted(a["reattached"] for a in answers) == [False, True]
            assert all(a["status"] == "COMPLETED" for a in answers)


async def test_lease_waits_for_the_holder_then_expires_if_it_died(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    async with (
        await anyio.to_thread.run_sync(Ledger.open, path) as one,
        await anyio.to_thread.run_sync(Ledger.open, path) as two,
    ):
        order: list[str] = []
        held = anyio.Event()
        release = anyio.Event()
        waited = anyio.Event()

        async def holder() -> None:
            async with one.submit_lease("local", "m/x", "d1"):
                held.set()
                await release.wait()
                order.append("first done")

        async def on_wait() -> None:
            waited.set()

        async def follower() -> None:
            await held.wait()
            async with two.submit_lease("local", "m/x", "d1", on_wait=on_wait):
                order.append("second in")

        async with anyio.create_task_group() as group:
            group.start_soon(holder)
            group.start_soon(follower)
            await waited.wait()  # the second is waiting on the first's lease
            release.set()
        assert order == ["first done", "second in"]

        # Another digest is not blocked; a holder that stopped renewing (died) loses its lease after its ttl.
        async with one.submit_lease("local", "m/x", "d2"), two.submit_lease("local", "m/x", "d3"):
            pass
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("INSERT INTO submit_leases VALUES ('local', 'm/x', 'd4', 'dead-process', 0)")
        conn.close()
        with anyio.fail_after(5):
            async with two.submit_lease("local", "m/x", "d4"):
                pass


def legacy_ledger(path: Path, owner: str, missing: tuple[str, ...]) -> None:
    """A ledger that says schema 2 but whose jobs table lacks ``missing`` columns, with an old unresolved intent."""
    columns = {
        "job_id": "TEXT PRIMARY KEY",
        "request_id": "TEXT",
        "owner": "TEXT NOT NULL",
        "endpoint_id": "TEXT NOT NULL",
        "input_digest": "TEXT NOT NULL",
        "input_preview": "TEXT NOT NULL",
        "status": "TEXT NOT NULL",
        "queue_position": "INTEGER",
        "error": "TEXT",
        "error_type": "TEXT",
        "result_urls": "TEXT NOT NULL DEFAULT '[]'",
        "cost_estimate_usd": "REAL",
        "origin_tool": "TEXT NOT NULL",
        "webhook_url": "TEXT",
        "created_at": "REAL NOT NULL",
        "updated_at": "REAL NOT NULL",
        "completed_at": "REAL",
        "body_digest": "TEXT",
    }
    kept = {name: kind for name, kind in columns.items() if name not in missing}
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    conn.executemany("INSERT INTO schema_version VALUES (?, 0)", [(1,), (2,)])
    conn.execute(f"CREATE TABLE jobs ({', '.join(f'{n} {k}' for n, k in kept.items())})")
    conn.execute(
        "INSERT INTO jobs (job_id, owner, endpoint_id, input_digest, input_preview, status, origin_tool, "
        "created_at, updated_at) VALUES ('intent_old', ?, 'emulator/slow', 'x', '{}', 'SUBMITTING', "
        "'fal_subscribe', 1, 1)",
        (owner,),
    )
    conn.commit()
    conn.close()


async def test_a_ledger_missing_columns_is_migrated_and_the_server_serves(
    settings: Settings, emulator: EmulatorServer
) -> None:
    legacy_ledger(settings.ledger_path, owner_of(settings), missing=("body_digest", "error_type", "result_urls"))
    data = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    async with Client(make_server(settings)) as client:
        done = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        assert not done.is_error, text_of(done)
        for _ in range(100):  # start-up reconciliation settles the old intent in the background
            jobs = structured(await call(client, "jobs_list", {}))["jobs"]
            if all(j["status"] != "SUBMITTING" for j in jobs):
                break
            await anyio.sleep(0.05)
    # The old intent is not in fal's history, which proves nothing (fal lists requests once finished): UNKNOWN.
    assert {j["status"] for j in jobs} == {"COMPLETED", "UNKNOWN"}
    columns = {row[1] for row in sqlite3.connect(settings.ledger_path).execute("PRAGMA table_info(jobs)")}
    assert {"body_digest", "error_type", "result_urls"} <= columns


async def test_a_damaged_ledger_is_moved_aside_and_the_server_serves(
    settings: Settings, emulator: EmulatorServer
) -> None:
    path = settings.ledger_path
    path.parent.mkdir(parents=True)
    junk = b"not a database at all " * 100
    path.write_bytes(junk)
    data = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    async with Client(make_server(settings)) as client:
        listed = structured(await call(client, "jobs_list", {}))
        done = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        again = structured(await call(client, "jobs_list", {}))
    assert "damaged" in listed["ledger"] and "moved to" in listed["ledger"] and "nothing deleted" in listed["ledger"]
    assert not done.is_error and again["jobs"][0]["request_id"] == structured(done)["request_id"]
    aside = [p for p in path.parent.iterdir() if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == junk


async def test_a_ledger_locked_at_start_comes_back_when_released(
    settings: Settings, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked by another process when the session starts: it is said so, and a paid call is refused with
    nothing submitted (another process is using this ledger, and paying without its lease could pay twice);
    once the lock is released, the same session pays and records jobs again."""
    monkeypatch.setattr(state_module, "LEDGER_BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(state_module, "LEDGER_RETRY_SECONDS", 0.0)
    settings.ledger_path.parent.mkdir(parents=True)
    blocker = sqlite3.connect(settings.ledger_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    data = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    try:
        async with Client(make_server(settings)) as client:
            locked = structured(await call(client, "jobs_list", {}))
            assert "unavailable" in locked["ledger"] and "locked" in locked["ledger"]
            refused = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
            assert error_of(refused)["kind"] == "busy", text_of(refused)
            assert "another fal-mcp process" in text_of(refused) and "nothing was submitted" in text_of(refused)
            assert submissions(emulator, "emulator/slow", data) == 0
            blocker.execute("COMMIT")
            done = structured(await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}))
            listed = structured(await call(client, "jobs_list", {}))
    finally:
        blocker.close()
    assert listed.get("ledger") is None
    assert [j["request_id"] for j in listed["jobs"]] == [done["request_id"]]


async def test_reconciliation_with_the_ledger_locked_is_logged_not_fatal(
    settings: Settings, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the ledger's write lock past the busy timeout while start-up reconciliation
    settles an old intent: the reconciliation gives up quietly and is retried on a later call."""
    from fal_mcp.fal.client import FalClient

    monkeypatch.setattr(state_module, "LEDGER_BUSY_TIMEOUT", 0.2)
    landed = {"seconds": 1.5, "steps": 1, "tag": uuid.uuid4().hex}
    async with await anyio.to_thread.run_sync(Ledger.open, settings.ledger_path) as ledger:
        await ledger.record_intent("emulator/slow", owner_of(settings), landed, "fal_subscribe")
    state = ServerState(settings, credentials=credentials_from_key(TEST_KEY))
    async with FalClient(credentials=credentials_from_key(TEST_KEY), hosts=settings.hosts) as fal:
        await fal.queue.submit("emulator/slow", landed)
        assert await state.ledger() is not None
        blocker = sqlite3.connect(settings.ledger_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            state._reconciled.add(owner_of(settings))
            await state._reconcile_in_background(fal, owner_of(settings))  # must not raise
            assert owner_of(settings) not in state._reconciled  # so a later call tries again
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert await state.reconcile_intents(fal, owner_of(settings)) == 1
    await state.aclose()


async def test_a_ledger_locked_mid_session_refuses_before_paying_and_never_loses_a_paid_result(
    settings: Settings, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the ledger's lock past the busy timeout. Before the submit: a clear 'busy'
    refusal and nothing paid. After the submit (while the job runs): the job's result still comes back."""
    monkeypatch.setattr(state_module, "LEDGER_BUSY_TIMEOUT", 0.2)
    before = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    during = {"seconds": 20, "steps": 4, "fail": False, "tag": uuid.uuid4().hex}
    async with Client(make_server(settings)) as client:
        await call(client, "jobs_list", {})  # the ledger is open
        blocker = sqlite3.connect(settings.ledger_path, isolation_level=None, check_same_thread=False)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            refused = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": before})
            assert error_of(refused)["kind"] == "busy" and "nothing was submitted" in text_of(refused)
            assert submissions(emulator, "emulator/slow", before) == 0
            blocker.execute("COMMIT")

            async def lock_once_queued(progress: float, total: float | None, message: str | None) -> None:
                if message and message.startswith(("queued", "running")) and not blocker.in_transaction:
                    blocker.execute("BEGIN EXCLUSIVE")

            result = await client.call_tool(
                "fal_subscribe", {"endpoint_id": "emulator/slow", "input": during}, progress_callback=lock_once_queued
            )
            assert blocker.in_transaction  # the ledger was locked while the job ran
        finally:
            if blocker.in_transaction:
                blocker.execute("COMMIT")
            blocker.close()
        assert not result.is_error, text_of(result)
        job = structured(result)
        assert job["status"] == "COMPLETED" and job["request_id"]
        listed = structured(await call(client, "jobs_list", {}))["jobs"]
    assert [j["request_id"] for j in listed] == [job["request_id"]]
    assert submissions(emulator, "emulator/slow", during) == 1


async def test_a_lease_left_by_a_dead_process_makes_its_unanswered_submit_unknown(
    settings: Settings, emulator: EmulatorServer
) -> None:
    """A process took the lease, recorded its intent, maybe sent the submit, and died (its lease expired).
    The next identical call must not take that intent for 'nothing sent': it becomes UNKNOWN (reconciled
    through fal's history), never silently ignored."""
    data = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    async with Client(make_server(settings)) as client:
        await call(client, "jobs_list", {})  # started (intents from before a start are reconciled separately)
        async with await anyio.to_thread.run_sync(Ledger.open, settings.ledger_path) as ledger:
            intent = await ledger.record_intent("emulator/slow", owner_of(settings), data, "fal_subscribe")
            record = await ledger.get(intent, owner_of(settings))
        assert record is not None
        conn = sqlite3.connect(settings.ledger_path, isolation_level=None)
        conn.execute(
            "INSERT INTO submit_leases VALUES (?, 'emulator/slow', ?, 'dead-process', 1)",
            (owner_of(settings), record.input_digest),
        )
        conn.close()
        await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        jobs = structured(await call(client, "jobs_list", {}))["jobs"]
    dead = next(j for j in jobs if j["request_id"] is None)
    assert dead["status"] == "UNKNOWN" and "stopped before recording fal's answer" in dead["error"]


async def test_a_real_server_process_outlives_a_held_half_migrated_ledger(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Issue 9 #7 in a real ``fal-mcp`` process: its ledger is an old file missing columns, holding an
    unresolved intent, and another process holds its write lock past the busy timeout while the server
    starts and reconciles. The process stays up and says why; a paid call is refused with nothing sent;
    once the lock is released the same process migrates the file, settles the old intent and pays again."""
    ledger = tmp_path / "shared" / "ledger.sqlite3"
    legacy_ledger(ledger, "local@" + emulator.base_url, missing=("body_digest", "error_type", "result_urls"))
    blocker = sqlite3.connect(ledger, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    data = {"seconds": 1, "steps": 1, "fail": False, "tag": uuid.uuid4().hex}
    args = {"endpoint_id": "emulator/slow", "input": data}
    try:
        async with Client(stdio_server(emulator, ledger, tmp_path / "home")) as client:
            listed = structured(await call(client, "jobs_list", {}))  # waits out the busy timeout (5 s)
            assert "unavailable" in listed["ledger"] and "locked" in listed["ledger"]
            refused = await call(client, "fal_subscribe", args)
            assert error_of(refused)["kind"] == "busy" and submissions(emulator, "emulator/slow", data) == 0
            blocker.execute("COMMIT")

            async def paid() -> bool:
                result = await call(client, "fal_subscribe", args)
                return not result.is_error and structured(result)["status"] == "COMPLETED"

            await eventually(paid, timeout=30)  # the ledger is tried again every few seconds

            async def settled() -> bool:
                jobs = structured(await call(client, "jobs_list", {}))["jobs"]
                return {j["status"] for j in jobs} == {"COMPLETED", "UNKNOWN"}

            await eventually(settled, timeout=20)  # the old intent: not in fal's history, so UNKNOWN
            assert (await client.list_tools()).tools  # the same process, still serving
    finally:
        if blocker.in_transaction:
            blocker.execute("COMMIT")
        blocker.close()
    assert submissions(emulator, "emulator/slow", data) == 1
    columns = {row[1] for row in sqlite3.connect(ledger).execute("PRAGMA table_info(jobs)")}
    assert {"body_digest", "error_type", "result_urls"} <= columns
