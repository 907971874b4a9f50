"""The job ledger on real SQLite files: intents, monotonic status, restarts, re-attachment, owners, errors."""

from __future__ import annotations

import functools
import sqlite3
import stat
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import platformdirs
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.ledger import (
    LEDGER_ENV,
    PREVIEW_LIMIT,
    JobNotFoundError,
    JobStatus,
    Ledger,
    LedgerError,
    default_ledger_path,
    extract_result_urls,
    input_preview,
)
from fal_mcp.redact import MASK, forget_secrets, register_secret

pytestmark = pytest.mark.anyio

FLUX = "fal-ai/flux/dev"
SDXL = "fal-ai/fast-sdxl"
PROMPT = {"prompt": "a red fox", "num_images": 1}


class Clock:
    """A hand-moved clock, so windows and ages are exact."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
async def ledger(db_path: Path, clock: Clock) -> AsyncIterator[Ledger]:
    async with await open_ledger(db_path, clock=clock) as opened:
        yield opened


async def open_ledger(path: Path | None = None, **options: Any) -> Ledger:
    """Open as the server does: in a worker thread, the event loop never waits on the disk."""
    return await anyio.to_thread.run_sync(functools.partial(Ledger.open, path, **options))


async def submitted(
    ledger: Ledger,
    request_id: str,
    *,
    owner: str = "alice",
    endpoint_id: str = FLUX,
    input: dict[str, object] = PROMPT,
    status: JobStatus = JobStatus.IN_QUEUE,
) -> str:
    """A job whose submit fal answered: intent, then request id."""
    intent = await ledger.record_intent(endpoint_id, owner, input, "fal_subscribe")
    await ledger.attach_request_id(intent, request_id, status=status)
    return intent


# --- the life of a job ---------------------------------------------------------------------------


async def test_intent_then_request_id_then_progress_then_completed(ledger: Ledger, clock: Clock) -> None:
    intent = await ledger.record_intent(
        FLUX, "alice", PROMPT, "fal_subscribe", webhook_url="https://example.com/hook", cost_estimate_usd=0.025
    )
    assert intent.startswith("intent_")

    pending = await ledger.get(intent, "alice")
    assert pending is not None
    assert pending.status == JobStatus.SUBMITTING
    assert pending.request_id is None
    assert pending.input_digest == input_digest(PROMPT)
    assert pending.input_preview == '{"num_images":1,"prompt":"a red fox"}'
    assert (pending.origin_tool, pending.webhook_url, pending.cost_estimate_usd) == (
        "fal_subscribe",
        "https://example.com/hook",
        0.025,
    )
    assert pending.created_at == pending.updated_at == clock.now

    clock.advance(1)
    queued = await ledger.attach_request_id(intent, "req-0001-aaaa", queue_position=2)
    assert (queued.request_id, queued.status, queued.queue_position) == ("req-0001-aaaa", JobStatus.IN_QUEUE, 2)
    assert queued.updated_at == clock.now

    clock.advance(1)
    running = await ledger.update_status("req-0001-aaaa", "IN_PROGRESS", owner="alice")
    assert running is not None
    assert running.status == JobStatus.IN_PROGRESS
    assert running.queue_position is None  # meaningless once out of the queue
    assert running.completed_at is None

    clock.advance(5)
    output = {"images": [{"url": "https://v3.fal.media/files/fox.png", "content_type": "image/png"}], "seed": 7}
    done = await ledger.update_status(
        "req-0001-aaaa", JobStatus.COMPLETED, owner="alice", result_urls=extract_result_urls(output)
    )
    assert done is not None
    assert done.status == JobStatus.COMPLETED
    assert done.result_urls == ["https://v3.fal.media/files/fox.png"]
    assert done.completed_at == done.updated_at == clock.now
    assert done.created_at == pending.created_at
    assert done.completed is not None and done.completed.endswith("+00:00")

    # The same row answers to its request id and to its intent id.
    assert await ledger.get("req-0001-aaaa", "alice") == done
    assert await ledger.get(intent, "alice") == done
    assert await ledger.get("req-0001-aaaa", "bob") is None


async def test_status_never_moves_back_from_a_terminal_state(ledger: Ledger, clock: Clock) -> None:
    await submitted(ledger, "req-mono-0001")
    await ledger.update_status("req-mono-0001", "IN_PROGRESS", owner="alice")
    # fal re-queues a request whose runner died: a running state may follow another.
    requeued = await ledger.update_status("req-mono-0001", "IN_QUEUE", owner="alice", queue_position=0)
    assert requeued is not None and (requeued.status, requeued.queue_position) == (JobStatus.IN_QUEUE, 0)

    clock.advance(3)
    done = await ledger.update_status("req-mono-0001", "COMPLETED", owner="alice", result_urls=["https://x/a.png"])
    assert done is not None
    completed_at = done.completed_at

    clock.advance(3)
    stale = await ledger.update_status("req-mono-0001", "IN_PROGRESS", owner="alice", queue_position=4)
    assert stale == done  # ignored, nothing touched
    assert (await ledger.get("req-mono-0001", "alice")) == done

    # A repeated COMPLETED keeps the first completion time and the URLs it was not given.
    again = await ledger.update_status("req-mono-0001", "COMPLETED", owner="alice")
    assert again is not None
    assert (again.completed_at, again.result_urls, again.updated_at) == (completed_at, ["https://x/a.png"], clock.now)

    # The result turned out to be an error: COMPLETED is refined to FAILED, which is final.
    failed = await ledger.update_status(
        "req-mono-0001", "FAILED", owner="alice", error="NSFW content detected", error_type="content_policy_violation"
    )
    assert failed is not None and failed.status == JobStatus.FAILED
    assert (failed.error, failed.error_type) == ("NSFW content detected", "content_policy_violation")
    late_poll = await ledger.update_status("req-mono-0001", "COMPLETED", owner="alice")
    assert late_poll is not None and late_poll.status == JobStatus.FAILED

    # A cancel that lost the race: fal's outcome beats the cancel request.
    await submitted(ledger, "req-mono-0002")
    cancelled = await ledger.update_status("req-mono-0002", "CANCELLED", owner="alice", error="cancelled by client")
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert await ledger.update_status("req-mono-0002", "IN_PROGRESS", owner="alice") == cancelled
    finished = await ledger.update_status("req-mono-0002", "COMPLETED", owner="alice")
    assert finished is not None and finished.status == JobStatus.COMPLETED

    # Unknown request ids and other owners' jobs are not touched.
    assert await ledger.update_status("req-nope-0000", "COMPLETED", owner="alice") is None
    await submitted(ledger, "req-mono-0003")
    assert await ledger.update_status("req-mono-0003", "COMPLETED", owner="mallory") is None
    mine = await ledger.get("req-mono-0003", "alice")
    assert mine is not None and mine.status == JobStatus.IN_QUEUE

    with pytest.raises(ValueError):
        await ledger.update_status("req-mono-0003", "DONE", owner="alice")


# --- crashes and restarts ------------------------------------------------------------------------


async def test_reopening_the_file_finds_everything(db_path: Path, clock: Clock) -> None:
    first = await open_ledger(db_path, clock=clock)
    await submitted(first, "req-keep-0001")
    await first.update_status("req-keep-0001", "COMPLETED", owner="alice", result_urls=["https://x/1.png"])
    await submitted(first, "req-keep-0002", status=JobStatus.IN_PROGRESS)
    intent = await first.record_intent(SDXL, "alice", {"prompt": "lost answer"}, "queue_submit")
    before = await first.list("alice")
    await first.close()

    async with await open_ledger(db_path, clock=clock) as second:
        assert await second.list("alice") == before
        running = await second.get("req-keep-0002", "alice")
        assert running is not None and running.status == JobStatus.IN_PROGRESS
        # The job from before the restart goes on being tracked.
        done = await second.update_status("req-keep-0002", "COMPLETED", owner="alice")
        assert done is not None and done.status == JobStatus.COMPLETED
        assert [r.job_id for r in await second.unresolved_intents("alice")] == [intent]


async def test_a_crashed_process_loses_nothing(db_path: Path) -> None:
    """A process that dies without closing (WAL not checkpointed) still leaves every committed row."""
    script = textwrap.dedent(
        f"""
        import os, anyio
        from fal_mcp.ledger import Ledger

        async def main():
            ledger = Ledger.open({str(db_path)!r})
            intent = await ledger.record_intent("{FLUX}", "alice", {{"prompt": "crash"}}, "fal_subscribe")
            await ledger.attach_request_id(intent, "req-crash-0001")
            await ledger.record_intent("{FLUX}", "alice", {{"prompt": "in flight"}}, "fal_subscribe")
            os._exit(0)

        anyio.run(main)
        """
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert (await anyio.Path(f"{db_path}-wal").stat()).st_size > 0  # really not checkpointed

    async with await open_ledger(db_path) as ledger:
        job = await ledger.get("req-crash-0001", "alice")
        assert job is not None and job.status == JobStatus.IN_QUEUE
        [orphan] = await ledger.unresolved_intents("alice")
        assert orphan.input_preview == '{"prompt":"in flight"}'


# --- no double payment ---------------------------------------------------------------------------


async def test_find_reusable(ledger: Ledger, clock: Clock) -> None:
    digest = input_digest(PROMPT)

    async def reusable(owner: str = "alice", endpoint_id: str = FLUX, digest: str = digest) -> str | None:
        found = await ledger.find_reusable(owner, endpoint_id, digest, window_seconds=600)
        return None if found is None else found.request_id

    # An intent fal has not answered yet has nothing to attach to.
    await ledger.record_intent(FLUX, "alice", PROMPT, "fal_subscribe")
    assert await reusable() is None

    # Still running: re-attach. Key order does not make a different input.
    await submitted(ledger, "req-reuse-0001", input={"num_images": 1, "prompt": "a red fox"})
    assert await reusable() == "req-reuse-0001"
    await ledger.update_status("req-reuse-0001", "IN_PROGRESS", owner="alice")
    assert await reusable() == "req-reuse-0001"

    # Never across owners, endpoints or inputs.
    assert await reusable(owner="bob") is None
    assert await reusable(endpoint_id=SDXL) is None
    assert await reusable(digest=input_digest({**PROMPT, "seed": 1})) is None

    # Completed within the window: re-attach; outside it: pay again.
    clock.advance(10)
    await ledger.update_status("req-reuse-0001", "COMPLETED", owner="alice")
    clock.advance(599)
    assert await reusable() == "req-reuse-0001"
    clock.advance(2)
    assert await reusable() is None

    # Failed and cancelled jobs never count, however recent; unknown ones neither.
    for request_id, status in (
        ("req-reuse-0002", "FAILED"),
        ("req-reuse-0003", "CANCELLED"),
        ("req-reuse-0004", "UNKNOWN"),
    ):
        await submitted(ledger, request_id)
        await ledger.update_status(request_id, status, owner="alice")
        assert await reusable() is None

    # Newest first when several qualify.
    await submitted(ledger, "req-reuse-0005")
    clock.advance(1)
    await submitted(ledger, "req-reuse-0006")
    assert await reusable() == "req-reuse-0006"


# --- listing -------------------------------------------------------------------------------------


async def test_list_filters_and_owner_isolation(ledger: Ledger, clock: Clock) -> None:
    await submitted(ledger, "req-list-0001")  # IN_QUEUE
    clock.advance(1)
    await submitted(ledger, "req-list-0002", endpoint_id=SDXL, status=JobStatus.IN_PROGRESS)
    clock.advance(1)
    await submitted(ledger, "req-list-0003")
    await ledger.update_status("req-list-0003", "COMPLETED", owner="alice")
    clock.advance(1)
    await submitted(ledger, "req-list-0004", endpoint_id=SDXL)
    await ledger.update_status("req-list-0004", "FAILED", owner="alice", error="boom")
    clock.advance(1)
    intent = await ledger.record_intent(FLUX, "alice", PROMPT, "fal_subscribe")
    clock.advance(1)
    await submitted(ledger, "req-list-bob1", owner="bob")

    def ids(records: list) -> list[str | None]:
        return [r.request_id or r.job_id for r in records]

    assert ids(await ledger.list("alice")) == [
        intent,
        "req-list-0004",
        "req-list-0003",
        "req-list-0002",
        "req-list-0001",
    ]
    assert ids(await ledger.list("alice", status="running")) == [intent, "req-list-0002", "req-list-0001"]
    assert ids(await ledger.list("alice", status="finished")) == ["req-list-0004", "req-list-0003"]
    assert ids(await ledger.list("alice", status="completed")) == ["req-list-0003"]
    assert ids(await ledger.list("alice", status="IN_QUEUE")) == ["req-list-0001"]
    assert ids(await ledger.list("alice", endpoint_id=SDXL)) == ["req-list-0004", "req-list-0002"]
    assert ids(await ledger.list("alice", status="running", endpoint_id=SDXL)) == ["req-list-0002"]
    assert ids(await ledger.list("alice", limit=2)) == [intent, "req-list-0004"]
    assert ids(await ledger.list("bob")) == ["req-list-bob1"]
    assert await ledger.list("carol") == []
    with pytest.raises(ValueError, match="running"):
        await ledger.list("alice", status="done")


# --- intents whose outcome is unknown ------------------------------------------------------------


async def test_unresolved_intents_and_their_resolution(ledger: Ledger, clock: Clock) -> None:
    old = await ledger.record_intent(FLUX, "alice", {"prompt": "one"}, "fal_subscribe")
    clock.advance(60)
    young = await ledger.record_intent(FLUX, "alice", {"prompt": "two"}, "queue_submit")
    await ledger.record_intent(FLUX, "bob", {"prompt": "bob's"}, "fal_subscribe")

    assert [r.job_id for r in await ledger.unresolved_intents("alice", older_than=30)] == [old]
    assert [r.job_id for r in await ledger.unresolved_intents("alice")] == [old, young]

    # The submit was refused before fal queued it: kept as FAILED with the reason, no longer unresolved.
    failed = await ledger.mark_intent_failed(young, "connection refused")
    assert (failed.status, failed.error, failed.error_type) == (JobStatus.FAILED, "connection refused", "submit_failed")
    assert failed.completed_at == clock.now
    # Reconciliation found the other one in fal's history after all.
    found = await ledger.attach_request_id(old, "req-hist-0001", status="IN_PROGRESS")
    assert (found.request_id, found.status) == ("req-hist-0001", JobStatus.IN_PROGRESS)
    assert await ledger.unresolved_intents("alice") == []
    assert len(await ledger.unresolved_intents("bob")) == 1

    # Marking an attached intent failed changes nothing: fal has the job.
    assert await ledger.mark_intent_failed(old, "too late") == found
    # Attaching the same id again is an ordinary update; another id is refused.
    again = await ledger.attach_request_id(old, "req-hist-0001", status="COMPLETED")
    assert again.status == JobStatus.COMPLETED
    with pytest.raises(LedgerError, match="already attached"):
        await ledger.attach_request_id(old, "req-hist-9999")

    # A submit believed failed that fal did queue: fal's answer wins.
    revived = await ledger.attach_request_id(young, "req-hist-0002", queue_position=5)
    assert (revived.status, revived.queue_position, revived.error, revived.completed_at) == (
        JobStatus.IN_QUEUE,
        5,
        None,
        None,
    )

    lost = await ledger.record_intent(SDXL, "alice", {"prompt": "three"}, "fal_subscribe")
    unknown = await ledger.mark_intent_unknown(lost, "fal's history has no trace and the submit may still show up")
    assert (unknown.status, unknown.error_type, unknown.completed_at) == (
        JobStatus.UNKNOWN,
        "submit_outcome_unknown",
        None,
    )
    assert await ledger.unresolved_intents("alice") == []

    with pytest.raises(JobNotFoundError):
        await ledger.attach_request_id("intent_missing", "req-hist-0003")


# --- two processes, one file ---------------------------------------------------------------------


async def test_two_instances_share_one_file(db_path: Path) -> None:
    async with await open_ledger(db_path) as stdio, await open_ledger(db_path) as http:
        await submitted(stdio, "req-share-0001")
        seen = await http.get("req-share-0001", "alice")
        assert seen is not None and seen.status == JobStatus.IN_QUEUE
        await http.update_status("req-share-0001", "COMPLETED", owner="alice")
        back = await stdio.get("req-share-0001", "alice")
        assert back is not None and back.status == JobStatus.COMPLETED

        async def burst(ledger: Ledger, owner: str) -> None:
            for n in range(40):
                await submitted(ledger, f"req-{owner}-{n:04d}", owner=owner)

        async with anyio.create_task_group() as tg:
            tg.start_soon(burst, stdio, "one")
            tg.start_soon(burst, http, "two")
        assert len(await stdio.list("two", limit=100)) == 40
        assert len(await http.list("one", limit=100)) == 40


async def test_a_held_write_lock_is_waited_for_then_reported(db_path: Path) -> None:
    async with await open_ledger(db_path, busy_timeout=0.1) as impatient, await open_ledger(db_path) as patient:
        blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LedgerError, match=f"locked.*{LEDGER_ENV}"):
                await impatient.record_intent(FLUX, "alice", PROMPT, "fal_subscribe")

            # Released 0.3 s later: a ledger with the default busy timeout just waits.
            async def release_later() -> None:
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(blocker.execute, "COMMIT")

            async with anyio.create_task_group() as tg:
                tg.start_soon(release_later)
                started = time.monotonic()
                intent = await patient.record_intent(FLUX, "alice", PROMPT, "fal_subscribe")
                waited = time.monotonic() - started
            assert waited >= 0.2
        finally:
            blocker.close()
        assert await impatient.get(intent, "alice") is not None


# --- files that cannot be used -------------------------------------------------------------------


async def test_open_creates_private_dirs_and_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.sqlite3"
    async with await open_ledger(path):
        pass
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_corrupt_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database, just junk " * 200)
    with pytest.raises(LedgerError, match=f"{path}.*damaged.*{LEDGER_ENV}"):
        await open_ledger(path)


async def test_unwritable_location_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(LedgerError, match=LEDGER_ENV):
        await open_ledger(blocker / "ledger.sqlite3")


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    async with await open_ledger(db_path):
        pass
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    conn.close()
    with pytest.raises(LedgerError, match="newer fal-mcp"):
        await open_ledger(db_path)


async def test_a_closed_ledger_raises_ledger_error(db_path: Path) -> None:
    ledger = await open_ledger(db_path)
    await ledger.close()
    with pytest.raises(LedgerError):
        await ledger.list("alice")


# --- retention -----------------------------------------------------------------------------------


async def test_prune_removes_only_old_finished_rows(ledger: Ledger, clock: Clock) -> None:
    await submitted(ledger, "req-old-00001")
    await ledger.update_status("req-old-00001", "COMPLETED", owner="alice")
    await submitted(ledger, "req-old-00002", owner="bob")  # never finished: kept (it may still be settled)
    clock.advance(20 * 86400)
    await submitted(ledger, "req-new-00001")
    await ledger.update_status("req-new-00001", "FAILED", owner="alice")
    clock.advance(11 * 86400)
    assert await ledger.prune(older_than_days=30) == 1
    assert [r.request_id for r in await ledger.list("alice")] == ["req-new-00001"]
    assert [r.request_id for r in await ledger.list("bob")] == ["req-old-00002"]
    assert await ledger.prune() == 0


async def test_prune_keeps_the_newest_finished_rows_and_every_unfinished_one(ledger: Ledger, clock: Clock) -> None:
    for n in range(6):
        await submitted(ledger, f"req-count-{n:05d}")
        if n != 1:
            await ledger.update_status(f"req-count-{n:05d}", "COMPLETED", owner="alice")
        clock.advance(1)
    assert await ledger.prune(keep_jobs=3) == 2  # rows 0 and 2 (finished, oldest); row 1 is still queued
    kept = sorted(r.request_id or "" for r in await ledger.list("alice"))
    assert kept == ["req-count-00001", "req-count-00003", "req-count-00004", "req-count-00005"]


async def test_prune_drops_leases_left_by_dead_holders(ledger: Ledger, clock: Clock, db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("INSERT INTO submit_leases VALUES ('alice', ?, 'gone', 'dead', ?)", (FLUX, clock.now - 2 * 86400))
    conn.execute("INSERT INTO submit_leases VALUES ('alice', ?, 'live', 'alive', ?)", (FLUX, clock.now + 30))
    await ledger.prune()
    assert [row[0] for row in conn.execute("SELECT input_digest FROM submit_leases")] == ["live"]
    conn.close()


# --- paths ---------------------------------------------------------------------------------------


def test_default_path_resolution(tmp_path: Path) -> None:
    state_default = platformdirs.user_state_path("fal-mcp") / "ledger.sqlite3"
    plugin = tmp_path / "plugin-data"

    assert default_ledger_path({}) == state_default
    assert default_ledger_path({"CLAUDE_PLUGIN_DATA": str(plugin)}) == plugin / "ledger.sqlite3"
    # A host that did not expand the template passes it through literally.
    assert default_ledger_path({"CLAUDE_PLUGIN_DATA": "${CLAUDE_PLUGIN_DATA}"}) == state_default
    assert default_ledger_path({"CLAUDE_PLUGIN_DATA": "  "}) == state_default
    explicit = tmp_path / "custom.db"
    assert default_ledger_path({LEDGER_ENV: str(explicit), "CLAUDE_PLUGIN_DATA": str(plugin)}) == explicit
    assert default_ledger_path({LEDGER_ENV: "${FAL_MCP_LEDGER}", "CLAUDE_PLUGIN_DATA": str(plugin)}) == (
        plugin / "ledger.sqlite3"
    )
    assert default_ledger_path({LEDGER_ENV: "~/x.db"}) == Path.home() / "x.db"


async def test_open_without_a_path_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(tmp_path / "plugin"))
    async with await open_ledger() as ledger:
        assert ledger.path == tmp_path / "plugin" / "ledger.sqlite3"
    assert ledger.path.exists()


# --- what gets stored ----------------------------------------------------------------------------


def test_extract_result_urls_from_a_nested_fal_output() -> None:
    output = {
        "images": [
            {"url": "https://v3.fal.media/files/a.png", "content_type": "image/png", "width": 1024},
            {"url": "https://v3.fal.media/files/b.png", "content_type": "image/png"},
        ],
        "video": {"url": "https://v3.fal.media/files/clip.mp4", "file_name": "clip.mp4", "file_size": 1234},
        "thumbnail_url": "http://cdn.example.com/t.jpg",
        "inline": {"url": "data:image/png;base64,iVBORw0KGgo="},
        "prompt": "https://not really a url",
        "timings": {"inference": 1.2},
        "has_nsfw_concepts": [False, False],
        "again": [{"url": "https://v3.fal.media/files/a.png"}],
        "deep": [[[{"masks": [{"url": "https://v3.fal.media/files/mask.png"}]}]]],
    }
    assert extract_result_urls(output) == [
        "https://v3.fal.media/files/a.png",
        "https://v3.fal.media/files/b.png",
        "https://v3.fal.media/files/clip.mp4",
        "http://cdn.example.com/t.jpg",
        "https://v3.fal.media/files/mask.png",
    ]
    many = {"images": [{"url": f"https://v3.fal.media/files/{n}.png"} for n in range(200)]}
    assert len(extract_result_urls(many)) == 50
    assert extract_result_urls(many, limit=3) == [f"https://v3.fal.media/files/{n}.png" for n in range(3)]
    assert extract_result_urls(None) == extract_result_urls("plain text") == []


def test_input_preview_is_small_canonical_and_redacted() -> None:
    image = "data:image/png;base64," + "A" * 100_000
    preview = input_preview({"prompt": "fox", "image_url": image})
    assert preview == '{"image_url":"data:image/png… (100022 chars)","prompt":"fox"}'

    long_text = "word " * 1000
    shortened = input_preview({"prompt": long_text})
    assert "(+4800 chars)" in shortened and len(shortened) < 300

    huge = input_preview({"prompts": [f"prompt number {n}" for n in range(1000)]})
    assert len(huge) == PREVIEW_LIMIT and huge.endswith("…")

    try:
        register_secret("sk-live-0123456789abcdef")
        assert input_preview({"api_key": "sk-live-0123456789abcdef"}) == f'{{"api_key":"{MASK}"}}'
    finally:
        forget_secrets()


async def test_a_stored_preview_stays_small(ledger: Ledger) -> None:
    big = {"image_url": "data:image/jpeg;base64," + "B" * 2_000_000, "prompt": "x"}
    intent = await ledger.record_intent(FLUX, "alice", big, "fal_subscribe")
    record = await ledger.get(intent, "alice")
    assert record is not None
    assert record.input_preview == '{"image_url":"data:image/jpeg… (2000023 chars)","prompt":"x"}'
    assert record.input_digest == input_digest(big)
    assert (await anyio.Path(ledger.path).stat()).st_size < 200_000


# -- one owner's view ----------------------------------------------------------------------------


async def test_an_owned_view_reads_and_writes_only_its_owners_jobs(ledger: Ledger) -> None:
    from fal_mcp.ledger import owned_ledger

    alice, bob = owned_ledger(ledger, "alice"), owned_ledger(ledger, "bob")
    intent = await alice.record_intent("fal-ai/flux/dev", {"prompt": "a"}, "fal_subscribe")
    await alice.attach_request_id(intent, "req-a")
    await bob.update_status("req-a", "COMPLETED")  # not bob's job: ignored
    assert [r.request_id for r in await alice.list()] == ["req-a"]
    assert await bob.list() == [] and await bob.get("req-a") is None
    record = await alice.get("req-a")
    assert record is not None and record.status == "IN_QUEUE" and record.owner == "alice"
    await alice.update_status("req-a", "COMPLETED", result_urls=["https://v3.fal.media/files/x.png"])
    reusable = await alice.find_reusable("fal-ai/flux/dev", record.input_digest, 600)
    assert reusable is not None and reusable.request_id == "req-a"
    assert await bob.find_reusable("fal-ai/flux/dev", record.input_digest, 600) is None


async def test_without_a_ledger_the_view_records_nothing_finds_nothing_and_never_reads_spend_as_zero() -> None:
    from fal_mcp.ledger import LedgerError, owned_ledger

    none = owned_ledger(None, "alice", failure=LedgerError("database is full"))
    assert not none.available and none.error == "database is full"
    intent = await none.record_intent("fal-ai/flux/dev", {"prompt": "a"}, "fal_subscribe")
    assert intent is None
    await none.attach_request_id(intent, "req-a")
    await none.mark_intent_failed(intent, "x")
    await none.mark_intent_unknown(intent, "x")
    await none.finish_direct(intent)
    await none.update_status("req-a", "COMPLETED")
    assert await none.get("req-a") is None and await none.list() == [] and await none.unresolved_intents() == []
    assert await none.find_reusable("fal-ai/flux/dev", "d", 600) is None
    assert await none.abandon_intents("fal-ai/flux/dev", "d", "x") == 0
    async with none.submit_lease("fal-ai/flux/dev", "d") as lease:
        assert not lease.took_over
    with pytest.raises(LedgerError, match="full"):
        await none.spent_since(0)
    with pytest.raises(ValueError):
        await none.list(status="NOT_A_STATUS")


async def test_a_ledger_another_process_holds_refuses_to_pay_rather_than_pay_unguarded() -> None:
    """A locked ledger is shared: without its lease two processes could both pay for one call."""
    from fal_mcp.ledger import LedgerError, LedgerLockedError, owned_ledger

    held = owned_ledger(None, "alice", failure=LedgerLockedError("job ledger at x is unusable (database is locked)"))
    assert not held.available
    with pytest.raises(LedgerLockedError, match="another fal-mcp process"):
        async with held.submit_lease("fal-ai/flux/dev", "d"):
            pass
    with pytest.raises(LedgerLockedError, match="try again"):
        await held.record_intent("fal-ai/flux/dev", {"prompt": "a"}, "fal_subscribe")
    assert await held.list() == [] and await held.get("req-a") is None  # reading still works (finds nothing)
    with pytest.raises(LedgerError):
        await held.spent_since(0)


def _open_and_close(path: str) -> str:
    try:
        anyio.run(Ledger.open(path, busy_timeout=5).close)
    except LedgerError as exc:
        return str(exc)
    return "ok"


def test_processes_opening_one_new_ledger_at_once_all_get_it(tmp_path: Path) -> None:
    """SQLite answers 'database is locked' at once, skipping its busy handler, to a connection switching a new
    file to WAL while another does: four processes opening a new ledger together must all get it (one that
    gave up would run unguarded, issue 9 #6). Before the fix ~1 round in 13 lost a process here."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        for round_ in range(30):
            path = str(tmp_path / f"round-{round_}" / "ledger.sqlite3")
            assert pool.map(_open_and_close, [path] * 4) == ["ok"] * 4, f"round {round_}"
