"""The job ledger: a local SQLite record of every paid request, so none is ever lost or paid twice.

Every submit is written down *before* it is sent (an "intent"), then tied to fal's request id when
fal answers, then kept current as the job runs. A crash at any point leaves a row behind: a known
request id can still be polled after a restart, and an intent whose answer was lost is reconciled
through fal's request history. Identical submits re-attach to a running or recently finished job
(:meth:`Ledger.find_reusable`) instead of paying again.

Rows belong to an ``owner``: an opaque string the server derives from the caller's credentials (the
ledger never sees keys). Every read and every update by request id is filtered by owner, so in
multi-user HTTP mode two users' jobs never mix.

One connection per :class:`Ledger`, guarded by a lock. Every method but the blocking constructor
:meth:`Ledger.open` is async and runs its SQL in a worker thread: a write can wait up to the busy
timeout while another process (the stdio server and an HTTP server may share the file) holds the
write lock, and the event loop must never block on that. The write itself costs tens of
microseconds (WAL, ``synchronous=NORMAL``: no fsync per commit).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import platformdirs
from pydantic import BaseModel, ConfigDict, computed_field

from fal_mcp.digest import canonical_json, input_digest
from fal_mcp.log import get_logger
from fal_mcp.redact import redact

logger = get_logger("fal_mcp.ledger")

LEDGER_ENV = "FAL_MCP_LEDGER"
PLUGIN_DATA_ENV = "CLAUDE_PLUGIN_DATA"
LEDGER_FILENAME = "ledger.sqlite3"

INTENT_PREFIX = "intent_"  # "_" is not allowed in fal request ids, so an intent id is never sent to fal.
SUBMIT_FAILED = "submit_failed"

PREVIEW_LIMIT = 2048
PREVIEW_STRING_LIMIT = 200
MAX_RESULT_URLS = 50
MAX_LIST_LIMIT = 500
DEFAULT_BUSY_TIMEOUT = 5.0

_T = TypeVar("_T")


class LedgerError(Exception):
    """The ledger cannot be used (corrupt, locked, unwritable, newer schema) or a row is missing.

    Messages say what to do; the server logs them and carries on without persistence.
    """


class JobNotFoundError(LedgerError, LookupError):
    """No row with that intent id."""


class LedgerLockedError(LedgerError):
    """Another process held the ledger's lock past the busy timeout."""


class LeaseBusyError(LedgerError):
    """Another process kept submitting the identical request for longer than we may wait."""


@dataclass
class SubmitLease:
    """A held submit lease; ``took_over`` when it was taken from a holder that stopped renewing it."""

    took_over: bool = False


# An identical submit in flight in another process holds a lease this long, renewed while it works.
LEASE_TTL = 30.0
LEASE_MAX_WAIT = 600.0


class JobStatus(StrEnum):
    """fal's three queue states plus what only the ledger knows (before fal answered, failure, cancel)."""

    SUBMITTING = "SUBMITTING"
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


RUNNING = frozenset({JobStatus.SUBMITTING, JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS})
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
_EVERY_STATE_BUT_SUBMITTING = frozenset(JobStatus) - {JobStatus.SUBMITTING}

# Which status may follow which. Running states never come back once a job is terminal. Among the
# terminal ones a later fact may refine an earlier one: a COMPLETED status whose result turns out to
# be an error becomes FAILED, and a cancel that lost the race becomes COMPLETED/FAILED. FAILED is
# final: fal reports failures as COMPLETED, so a later COMPLETED poll must not undo it.
_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SUBMITTING: frozenset(JobStatus),
    JobStatus.IN_QUEUE: _EVERY_STATE_BUT_SUBMITTING,
    JobStatus.IN_PROGRESS: _EVERY_STATE_BUT_SUBMITTING,  # incl. IN_QUEUE: fal re-queues when a runner dies
    JobStatus.UNKNOWN: _EVERY_STATE_BUT_SUBMITTING,
    JobStatus.COMPLETED: frozenset({JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.CANCELLED: frozenset({JobStatus.CANCELLED, JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.FAILED: frozenset({JobStatus.FAILED}),
}

# `list(status=...)` accepts a JobStatus or one of these groups.
STATUS_GROUPS: dict[str, frozenset[JobStatus]] = {
    "running": RUNNING,
    "finished": TERMINAL,
}


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class JobRecord(BaseModel):
    """One submitted (or about to be submitted) request, as the ledger last knew it."""

    model_config = ConfigDict(frozen=True)

    job_id: str  # local id minted at intent time (``intent_…``); stable for the row's whole life
    request_id: str | None  # fal's id, once fal answered
    endpoint_id: str
    owner: str
    input_digest: str
    input_preview: str
    status: JobStatus
    queue_position: int | None = None
    error: str | None = None
    error_type: str | None = None
    result_urls: list[str] = []
    cost_estimate_usd: float | None = None
    origin_tool: str
    webhook_url: str | None = None
    created_at: float
    updated_at: float
    completed_at: float | None = None  # when the job reached any terminal state
    # Digest of the exact JSON body sent to fal, when it differs from ``input_digest`` (local files
    # uploaded to fresh URLs); reconciliation looks the submit up in fal's history by it.
    body_digest: str | None = None

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @computed_field  # type: ignore[prop-decorator]
    @property
    def created(self) -> str:
        """ISO-8601 UTC, for people and models reading ``jobs_list``."""
        return _iso(self.created_at) or ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def updated(self) -> str:
        return _iso(self.updated_at) or ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def completed(self) -> str | None:
        return _iso(self.completed_at)


# --- paths -------------------------------------------------------------------------------------------


def _env_path(value: str | None) -> str | None:
    """A usable path from the environment: not empty, not an unexpanded ``${VAR}`` template."""
    if value is None:
        return None
    value = value.strip()
    if not value or "${" in value:
        return None
    return value


def default_ledger_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the ledger lives: ``$FAL_MCP_LEDGER`` (a full path), else the plugin data dir, else the user state dir.

    Claude Code plugins get ``${CLAUDE_PLUGIN_DATA}``; a host that does not expand it passes the
    template through literally, which must not become a directory named ``${CLAUDE_PLUGIN_DATA}``.
    """
    explicit = _env_path(env.get(LEDGER_ENV))
    if explicit is not None:
        return Path(explicit).expanduser()
    plugin_data = _env_path(env.get(PLUGIN_DATA_ENV))
    if plugin_data is not None:
        return Path(plugin_data).expanduser() / LEDGER_FILENAME
    return platformdirs.user_state_path("fal-mcp") / LEDGER_FILENAME


# --- what gets stored --------------------------------------------------------------------------------

_DATA_URI = re.compile(r"^data:([^;,]*)[;,]")


def _shorten(value: Any) -> Any:
    """Replace long strings (data URIs, pasted text) by a stub that says how long they were."""
    if isinstance(value, str):
        if value.startswith("data:"):
            match = _DATA_URI.match(value)
            mime = match.group(1) if match else ""
            return f"data:{mime}… ({len(value)} chars)"
        if len(value) > PREVIEW_STRING_LIMIT:
            return f"{value[:PREVIEW_STRING_LIMIT]}… (+{len(value) - PREVIEW_STRING_LIMIT} chars)"
        return value
    if isinstance(value, Mapping):
        return {str(k): _shorten(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten(v) for v in value]
    return value


def input_preview(value: Any, limit: int = PREVIEW_LIMIT) -> str:
    """Canonical JSON of an input, long strings stubbed, redacted, at most ``limit`` characters.

    Enough for ``jobs_list`` to show what a job was; never the megabytes of an inlined image.
    """
    text = redact(canonical_json(_shorten(value)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_result_url(value: str) -> bool:
    return value.startswith(("https://", "http://")) and len(value) <= 4096 and not any(c.isspace() for c in value)


def extract_result_urls(output: Any, limit: int = MAX_RESULT_URLS) -> list[str]:
    """Every http(s) URL in a fal output (File/Image ``{"url": …}`` dicts, ``video_url`` strings, …).

    Depth-first in document order, de-duplicated, at most ``limit``; data URIs are not URLs to keep.
    """
    found: dict[str, None] = {}

    def walk(node: Any, depth: int) -> None:
        if len(found) >= limit or depth > 32:
            return
        if isinstance(node, str):
            if _is_result_url(node):
                found.setdefault(node)
        elif isinstance(node, Mapping):
            for child in node.values():
                walk(child, depth + 1)
        elif isinstance(node, (list, tuple)):
            for child in node:
                walk(child, depth + 1)

    walk(output, 0)
    return list(found)[:limit]


# --- schema ------------------------------------------------------------------------------------------

# Append a new entry for every schema change; never edit a released one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE jobs (
            job_id            TEXT PRIMARY KEY,
            request_id        TEXT,
            owner             TEXT NOT NULL,
            endpoint_id       TEXT NOT NULL,
            input_digest      TEXT NOT NULL,
            input_preview     TEXT NOT NULL,
            status            TEXT NOT NULL,
            queue_position    INTEGER,
            error             TEXT,
            error_type        TEXT,
            result_urls       TEXT NOT NULL DEFAULT '[]',
            cost_estimate_usd REAL,
            origin_tool       TEXT NOT NULL,
            webhook_url       TEXT,
            created_at        REAL NOT NULL,
            updated_at        REAL NOT NULL,
            completed_at      REAL
        )
        """,
        "CREATE UNIQUE INDEX jobs_owner_request ON jobs (owner, request_id) WHERE request_id IS NOT NULL",
        "CREATE INDEX jobs_owner_created ON jobs (owner, created_at)",
        "CREATE INDEX jobs_reuse ON jobs (owner, endpoint_id, input_digest)",
    ),
    2: ("ALTER TABLE jobs ADD COLUMN body_digest TEXT",),
    3: (
        """
        CREATE TABLE submit_leases (
            owner        TEXT NOT NULL,
            endpoint_id  TEXT NOT NULL,
            input_digest TEXT NOT NULL,
            holder       TEXT NOT NULL,
            expires_at   REAL NOT NULL,
            PRIMARY KEY (owner, endpoint_id, input_digest)
        )
        """,
    ),
}

# What each ``jobs`` column must be, for repairing a file whose table lacks some (written by a build that
# recorded a schema version without the matching columns). NOT NULL columns need a default to be added.
_JOB_COLUMN_REPAIRS: dict[str, str] = {
    "request_id": "TEXT",
    "owner": "TEXT NOT NULL DEFAULT 'local'",
    "endpoint_id": "TEXT NOT NULL DEFAULT ''",
    "input_digest": "TEXT NOT NULL DEFAULT ''",
    "input_preview": "TEXT NOT NULL DEFAULT ''",
    "status": "TEXT NOT NULL DEFAULT 'UNKNOWN'",
    "queue_position": "INTEGER",
    "error": "TEXT",
    "error_type": "TEXT",
    "result_urls": "TEXT NOT NULL DEFAULT '[]'",
    "cost_estimate_usd": "REAL",
    "origin_tool": "TEXT NOT NULL DEFAULT ''",
    "webhook_url": "TEXT",
    "created_at": "REAL NOT NULL DEFAULT 0",
    "updated_at": "REAL NOT NULL DEFAULT 0",
    "completed_at": "REAL",
    "body_digest": "TEXT",
}
_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_request ON jobs (owner, request_id) WHERE request_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_reuse ON jobs (owner, endpoint_id, input_digest)",
)
SCHEMA_VERSION = max(_MIGRATIONS)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file up to :data:`SCHEMA_VERSION` in one transaction; refuse files from a newer fal-mcp."""
    with _transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise LedgerError(
                f"the job ledger was written by a newer fal-mcp (schema {current}, this one knows {SCHEMA_VERSION}); "
                f"upgrade fal-mcp or set {LEDGER_ENV} to another path"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
        _repair_jobs_table(conn)


def _repair_jobs_table(conn: sqlite3.Connection) -> None:
    """Add any ``jobs`` column the file lacks (a schema version recorded without its columns)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "job_id" not in present:
        raise sqlite3.DatabaseError("incompatible ledger: its jobs table has no job_id column")
    missing = [name for name in _JOB_COLUMN_REPAIRS if name not in present]
    for name in missing:
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {_JOB_COLUMN_REPAIRS[name]}")
    if missing:
        logger.warning("ledger.repaired", added_columns=missing)
        for statement in _INDEXES:
            conn.execute(statement)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock up front, so read-modify-write is atomic across processes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_COLUMNS = tuple(JobRecord.model_fields)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"


def _record(row: sqlite3.Row) -> JobRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["result_urls"] = json.loads(data["result_urls"])
    return JobRecord.model_validate(data)


def _statuses(status: str | None) -> frozenset[JobStatus] | None:
    if status is None:
        return None
    key = status.strip()
    if key.lower() in STATUS_GROUPS:
        return STATUS_GROUPS[key.lower()]
    try:
        return frozenset({JobStatus(key.upper())})
    except ValueError:
        choices = ", ".join([*STATUS_GROUPS, *JobStatus])
        raise ValueError(f"unknown job status {status!r}; use one of: {choices}") from None


def _placeholders(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


# --- the ledger --------------------------------------------------------------------------------------


class Ledger:
    """The job ledger on one SQLite file: ``Ledger.open(path)`` (blocking), then ``await ledger.close()``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._clock = clock
        self.path = path
        self.moved_aside: Path | None = None  # where a damaged file found at open was moved

    # -- lifecycle --

    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
        recover_damaged: bool = False,
    ) -> Ledger:
        """Open (creating, migrating) the ledger at ``path`` (default :func:`default_ledger_path`).

        Blocking, like any constructor of a file-backed thing: from async code, call it through
        ``anyio.to_thread.run_sync``. Raises :class:`LedgerError` with advice when the file is
        corrupt, locked or cannot be created; the server then runs without persistence.

        With ``recover_damaged``, a file that is not a usable SQLite ledger (junk, malformed, a
        ``jobs`` table that cannot be repaired) is moved aside, never deleted, and a fresh ledger
        started; :attr:`moved_aside` then says where the old one went.
        """
        resolved = Path(path) if path is not None else default_ledger_path()
        moved_aside: Path | None = None
        try:
            conn = _connect(resolved, busy_timeout)
        except LedgerError as exc:
            if not (recover_damaged and isinstance(exc.__cause__, sqlite3.DatabaseError) and _damaged(exc.__cause__)):
                raise
            moved_aside = _move_aside(resolved)
            logger.warning("ledger.moved_aside", path=str(resolved), moved_to=str(moved_aside), error=str(exc))
            conn = _connect(resolved, busy_timeout)
        logger.debug("ledger opened", path=str(resolved))
        ledger = cls(conn, resolved, clock)
        ledger.moved_aside = moved_aside
        return ledger

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                self._conn.close()

        await anyio.to_thread.run_sync(close)

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``fn(conn, now)`` in a worker thread under the lock; sqlite errors become :class:`LedgerError`."""

        def call() -> _T:
            with self._lock:
                try:
                    return fn(self._conn, self._clock())
                except sqlite3.Error as exc:
                    raise LedgerError(_advice(self.path, exc)) from exc

        return await anyio.to_thread.run_sync(call)

    # -- submission intents --

    async def record_intent(
        self,
        endpoint_id: str,
        owner: str,
        input: Any,
        origin_tool: str,
        *,
        webhook_url: str | None = None,
        cost_estimate_usd: float | None = None,
        digest: str | None = None,
    ) -> str:
        """Write a ``SUBMITTING`` row *before* the submit is sent; returns its intent id (``intent_…``).

        ``digest`` overrides the input's own digest when "the same request" means more than the JSON
        (e.g. local files uploaded to fresh URLs are identified by path, size and mtime instead).
        """
        job_id = INTENT_PREFIX + uuid.uuid4().hex
        body_digest = input_digest(input)
        digest = digest or body_digest
        preview = input_preview(input)

        def insert(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                """INSERT INTO jobs (job_id, owner, endpoint_id, input_digest, input_preview, status,
                                     cost_estimate_usd, origin_tool, webhook_url, created_at, updated_at,
                                     body_digest)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    job_id,
                    owner,
                    endpoint_id,
                    digest,
                    preview,
                    JobStatus.SUBMITTING,
                    cost_estimate_usd,
                    origin_tool,
                    webhook_url,
                    now,
                    now,
                    body_digest if body_digest != digest else None,
                ),
            )

        await self._run(insert)
        return job_id

    async def attach_request_id(
        self,
        intent_id: str,
        request_id: str,
        status: JobStatus | str = JobStatus.IN_QUEUE,
        queue_position: int | None = None,
    ) -> JobRecord:
        """fal answered the submit: tie the intent to its request id.

        fal's answer is the fact, so this also revives an intent that was marked failed/unknown
        (reconciliation found it in fal's history after all). Attaching the same id again is an
        ordinary monotonic status update; attaching a different one is refused.
        """
        new = JobStatus(status)

        def attach(conn: sqlite3.Connection, now: float) -> JobRecord:
            with _transaction(conn):
                row = _get_intent(conn, intent_id)
                if row.request_id is not None and row.request_id != request_id:
                    raise LedgerError(f"intent {intent_id} is already attached to request {row.request_id}")
                if row.request_id == request_id:
                    _apply_status(conn, row, new, now, queue_position=queue_position)
                else:
                    conn.execute(
                        """UPDATE jobs SET request_id = ?, status = ?, queue_position = ?, error = NULL,
                                          error_type = NULL, completed_at = ?, updated_at = ?
                           WHERE job_id = ?""",
                        (
                            request_id,
                            new,
                            queue_position if new == JobStatus.IN_QUEUE else None,
                            now if new in TERMINAL else None,
                            now,
                            intent_id,
                        ),
                    )
                return _get_intent(conn, intent_id)

        return await self._run(attach)

    async def mark_intent_failed(self, intent_id: str, error: str, *, error_type: str = SUBMIT_FAILED) -> JobRecord:
        """The submit definitely did not reach fal (refused before queueing, connection never made).

        The row is kept as ``FAILED`` rather than deleted: ``jobs_list`` then tells the agent its
        attempt failed and why, and retention removes it like any other row. No-op once a request id
        is attached (fal has the job, whatever the caller believed).
        """
        return await self._finish_intent(intent_id, JobStatus.FAILED, error, error_type)

    async def mark_intent_unknown(self, intent_id: str, error: str) -> JobRecord:
        """Reconciliation could not tell whether fal got the submit; stop retrying and say so in ``jobs_list``."""
        return await self._finish_intent(intent_id, JobStatus.UNKNOWN, error, "submit_outcome_unknown")

    async def _finish_intent(self, intent_id: str, status: JobStatus, error: str, error_type: str) -> JobRecord:
        def finish(conn: sqlite3.Connection, now: float) -> JobRecord:
            with _transaction(conn):
                conn.execute(
                    """UPDATE jobs SET status = ?, error = ?, error_type = ?, updated_at = ?,
                                      completed_at = CASE WHEN ? THEN ? END
                       WHERE job_id = ? AND request_id IS NULL AND status = ?""",
                    (
                        status,
                        redact(error) if error else None,
                        error_type or None,
                        now,
                        status in TERMINAL,
                        now,
                        intent_id,
                        JobStatus.SUBMITTING,
                    ),
                )
                return _get_intent(conn, intent_id)

        return await self._run(finish)

    async def unresolved_intents(self, owner: str, older_than: float = 0.0) -> list[JobRecord]:
        """Intents still ``SUBMITTING`` without a request id, created at least ``older_than`` seconds ago, oldest first.

        Their submit may or may not have reached fal; the server reconciles them through fal's
        request history (then :meth:`attach_request_id`, :meth:`mark_intent_failed` or
        :meth:`mark_intent_unknown`).
        """

        def select(conn: sqlite3.Connection, now: float) -> list[JobRecord]:
            rows = conn.execute(
                f"""{_SELECT} WHERE owner = ? AND request_id IS NULL AND status = ? AND created_at <= ?
                    ORDER BY created_at""",
                (owner, JobStatus.SUBMITTING, now - older_than),
            )
            return [_record(row) for row in rows]

        return await self._run(select)

    # -- the submit lease (one payer across processes) --

    @asynccontextmanager
    async def submit_lease(
        self,
        owner: str,
        endpoint_id: str,
        input_digest: str,
        *,
        ttl: float = LEASE_TTL,
        max_wait: float = LEASE_MAX_WAIT,
        on_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[SubmitLease]:
        """Hold the right to submit this exact request, across every process sharing the file.

        Identical calls from two server processes would otherwise both find nothing to re-attach
        to and both pay. The lease is a row claimed under ``BEGIN IMMEDIATE``; the holder renews it
        every ``ttl / 3`` while it works and deletes it when done, so the other process waits, then
        finds the holder's request in the ledger and re-attaches. A holder that died stops renewing:
        its lease expires after ``ttl`` (the next holder's :attr:`SubmitLease.took_over` then says so: that
        holder's submit may have reached fal). Waiting longer than ``max_wait`` raises :class:`LeaseBusyError`.
        """
        holder = uuid.uuid4().hex
        key = (owner, endpoint_id, input_digest)

        lease = SubmitLease()

        def claim(conn: sqlite3.Connection, now: float) -> bool:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT holder, expires_at FROM submit_leases WHERE owner = ? AND endpoint_id = ? "
                    "AND input_digest = ?",
                    key,
                ).fetchone()
                if row is not None and row[0] != holder and row[1] > now:
                    return False
                if row is not None and row[0] != holder:
                    lease.took_over = True  # its holder stopped renewing: it died, or is stuck
                conn.execute(
                    "INSERT OR REPLACE INTO submit_leases (owner, endpoint_id, input_digest, holder, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (*key, holder, now + ttl),
                )
                return True

        def release(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "DELETE FROM submit_leases WHERE owner = ? AND endpoint_id = ? AND input_digest = ? AND holder = ?",
                (*key, holder),
            )

        deadline = time.monotonic() + max_wait
        delay = 0.02
        waiting = False
        while not await self._run(claim):
            if not waiting and on_wait is not None:
                await on_wait()
            waiting = True
            if time.monotonic() >= deadline:
                raise LeaseBusyError(
                    f"an identical request has been submitting from another fal-mcp process for over {max_wait:.0f}s"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.25)

        async def renew() -> None:
            while True:
                await anyio.sleep(ttl / 3)
                try:
                    await self._run(claim)
                except LedgerError as exc:  # the next renewal may succeed; expiry is the fallback
                    logger.warning("ledger.lease_renew_failed", error=str(exc))

        failure: BaseException | None = None
        async with anyio.create_task_group() as renewing:
            renewing.start_soon(renew)
            try:
                yield lease
            except BaseException as exc:  # re-raised below, outside the task group (no exception group)
                failure = exc
            finally:
                renewing.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    try:
                        await self._run(release)
                    except LedgerError as exc:
                        logger.warning("ledger.lease_release_failed", error=str(exc))
        if failure is not None:
            raise failure

    async def abandon_intents(self, owner: str, endpoint_id: str, input_digest: str, error: str) -> int:
        """Mark ``owner``'s unanswered intents for this exact request ``UNKNOWN``: their submitter is gone.

        For the next holder of a lease whose holder stopped renewing it: that process may have sent its
        submit and died before recording fal's answer, so the submit's outcome is unknown (reconciliation
        looks it up in fal's history; an answer that turns up later still attaches).
        """

        def abandon(conn: sqlite3.Connection, now: float) -> int:
            with _transaction(conn):
                cursor = conn.execute(
                    """UPDATE jobs SET status = ?, error = ?, error_type = ?, updated_at = ?
                       WHERE owner = ? AND endpoint_id = ? AND input_digest = ? AND request_id IS NULL
                         AND status = ?""",
                    (
                        JobStatus.UNKNOWN,
                        redact(error),
                        "submit_outcome_unknown",
                        now,
                        owner,
                        endpoint_id,
                        input_digest,
                        JobStatus.SUBMITTING,
                    ),
                )
            return cursor.rowcount

        return await self._run(abandon)

    # -- status --

    async def update_status(
        self,
        request_id: str,
        status: JobStatus | str,
        *,
        owner: str,
        queue_position: int | None = None,
        error: str | None = None,
        error_type: str | None = None,
        result_urls: list[str] | None = None,
    ) -> JobRecord | None:
        """Record the last known state of ``owner``'s request; ``None`` if the ledger has no such job.

        Monotonic: a transition the status table forbids (e.g. COMPLETED back to IN_PROGRESS, from a
        stale poll) is ignored and the current row returned. Fields left ``None`` keep their value;
        ``queue_position`` is cleared once the job leaves the queue.
        """
        new = JobStatus(status)

        def update(conn: sqlite3.Connection, now: float) -> JobRecord | None:
            with _transaction(conn):
                row = conn.execute(f"{_SELECT} WHERE owner = ? AND request_id = ?", (owner, request_id)).fetchone()
                if row is None:
                    return None
                current = _record(row)
                if not _apply_status(
                    conn,
                    current,
                    new,
                    now,
                    queue_position=queue_position,
                    error=error,
                    error_type=error_type,
                    result_urls=result_urls,
                ):
                    return current
                return _record(conn.execute(f"{_SELECT} WHERE job_id = ?", (current.job_id,)).fetchone())

        return await self._run(update)

    # -- reads --

    async def get(self, request_id: str, owner: str) -> JobRecord | None:
        """``owner``'s job by fal request id, or by intent id while fal has not answered yet."""

        def select(conn: sqlite3.Connection, now: float) -> JobRecord | None:
            row = conn.execute(
                f"{_SELECT} WHERE owner = ? AND (request_id = ? OR job_id = ?)", (owner, request_id, request_id)
            ).fetchone()
            return None if row is None else _record(row)

        return await self._run(select)

    async def find_reusable(
        self, owner: str, endpoint_id: str, input_digest: str, window_seconds: float
    ) -> JobRecord | None:
        """The newest identical job worth re-attaching to instead of paying again.

        Identical = same owner, endpoint and input digest. Worth it = still running with a known
        request id, or COMPLETED no more than ``window_seconds`` ago. Failed, cancelled and unknown
        jobs never qualify; neither does an intent fal has not answered (there is nothing to attach to).
        """

        def select(conn: sqlite3.Connection, now: float) -> JobRecord | None:
            running = (JobStatus.SUBMITTING, JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)
            row = conn.execute(
                f"""{_SELECT}
                    WHERE owner = ? AND endpoint_id = ? AND input_digest = ? AND request_id IS NOT NULL
                      AND (status IN ({_placeholders(running)})
                           OR (status = ? AND completed_at >= ?))
                    ORDER BY created_at DESC LIMIT 1""",
                (owner, endpoint_id, input_digest, *running, JobStatus.COMPLETED, now - window_seconds),
            ).fetchone()
            return None if row is None else _record(row)

        return await self._run(select)

    async def list(
        self, owner: str, status: str | None = None, endpoint_id: str | None = None, limit: int = 20
    ) -> list[JobRecord]:
        """``owner``'s jobs, newest first. ``status`` is a :class:`JobStatus` or ``running`` / ``finished``.

        Raises ``ValueError`` for an unknown status (before touching the database).
        """
        statuses = _statuses(status)
        limit = max(1, min(int(limit), MAX_LIST_LIMIT))
        where = ["owner = ?"]
        params: list[Any] = [owner]
        if statuses is not None:
            where.append(f"status IN ({_placeholders(statuses)})")
            params.extend(sorted(statuses))
        if endpoint_id is not None:
            where.append("endpoint_id = ?")
            params.append(endpoint_id)

        def select(conn: sqlite3.Connection, now: float) -> list[JobRecord]:
            rows = conn.execute(
                f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, limit),
            )
            return [_record(row) for row in rows]

        return await self._run(select)

    # -- spend --

    async def spent_since(self, owner: str, since: float) -> float:
        """``owner``'s estimated spend on jobs created since ``since`` (every row but a submit that provably
        never reached fal). Unknown estimates count as nothing: the spend gate asks before those."""

        def total(conn: sqlite3.Connection, now: float) -> float:
            row = conn.execute(
                """SELECT COALESCE(SUM(cost_estimate_usd), 0) FROM jobs
                   WHERE owner = ? AND created_at >= ? AND NOT (status = ? AND error_type IS ?)""",
                (owner, since, JobStatus.FAILED, SUBMIT_FAILED),
            ).fetchone()
            return float(row[0] or 0.0)

        return await self._run(total)

    async def finish_direct(self, intent_id: str, *, failed: str | None = None) -> JobRecord:
        """A direct call (stream, realtime) fal gives no request id for has ended: COMPLETED, or FAILED with why."""
        status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        return await self._finish_intent(intent_id, status, failed or "", "direct_failed" if failed else "")

    # -- retention --

    async def prune(
        self, older_than_days: float = 30, keep_jobs: int | None = None, *, owner: str | None = None
    ) -> int:
        """Delete finished rows untouched for ``older_than_days``, and finished rows beyond the newest
        ``keep_jobs`` (``owner``'s, or every owner's together when ``None``); returns how many went.

        fal keeps results for 30 days at most, so an older row can no longer be acted upon. Unfinished
        rows (submitting, queued, running, outcome unknown) are kept whatever their age: they may still
        be settled, and each may stand for a charge.
        """
        finished = sorted(TERMINAL)

        scope, scoped = ("1", ()) if owner is None else ("owner = ?", (owner,))

        def delete(conn: sqlite3.Connection, now: float) -> int:
            with _transaction(conn):
                cursor = conn.execute(
                    f"DELETE FROM jobs WHERE {scope} AND updated_at < ? AND status IN ({_placeholders(finished)})",
                    (*scoped, now - older_than_days * 86400, *finished),
                )
                removed = cursor.rowcount
                if keep_jobs is not None:
                    cursor = conn.execute(
                        f"""DELETE FROM jobs WHERE {scope} AND status IN ({_placeholders(finished)}) AND job_id NOT IN (
                                SELECT job_id FROM jobs WHERE {scope} ORDER BY updated_at DESC, rowid DESC LIMIT ?)""",
                        (*scoped, *finished, *scoped, max(int(keep_jobs), 0)),
                    )
                    removed += cursor.rowcount
                conn.execute("DELETE FROM submit_leases WHERE expires_at < ?", (now - 86400,))  # left by dead holders
            return removed

        removed = await self._run(delete)
        if removed:
            logger.info("ledger pruned", removed=removed, older_than_days=older_than_days, keep_jobs=keep_jobs)
        return removed


# --- helpers that run inside the worker thread -------------------------------------------------------


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # The ledger shows what users asked for: keep it private (SQLite's -wal/-shm copy this mode).
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise _ledger_error(path, exc) from exc
    try:
        _switch_to_wal(conn, deadline=time.monotonic() + busy_timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn)
        (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
    except LedgerError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise _ledger_error(path, exc) from exc
    return conn


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _ledger_error(path: Path, exc: BaseException) -> LedgerError:
    return (LedgerLockedError if _locked(exc) else LedgerError)(_advice(path, exc))


def _switch_to_wal(conn: sqlite3.Connection, *, deadline: float) -> None:
    """``PRAGMA journal_mode=WAL``, waiting out other processes opening the same new file.

    SQLite answers "database is locked" at once, without its busy handler, when another connection is
    switching the file's journal mode at the same moment (two servers starting on a new ledger). Giving up
    there would run a server without its ledger, and so without the lease that stops both paying for one
    call: retry until the busy timeout instead, like any other locked write.
    """
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)  # this runs in a worker thread (see Ledger.open)
        delay = min(delay * 2, 0.1)


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    detail = str(exc)
    return "not a database" in detail or "malformed" in detail or "incompatible ledger" in detail


def _move_aside(path: Path) -> Path:
    """Rename a damaged ledger (and its -wal/-shm) to ``<name>.damaged-<UTC time>``; nothing is deleted."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    try:
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                source.rename(target.with_name(target.name + suffix))
    except OSError as exc:
        raise LedgerError(_advice(path, exc)) from exc
    return target


def _advice(path: Path, exc: BaseException) -> str:
    """A message that says what broke and what to do about it."""
    detail = str(exc) or type(exc).__name__
    if _locked(exc):
        hint = "another fal-mcp process is holding it; retry, or"
    elif isinstance(exc, sqlite3.DatabaseError) and _damaged(exc):
        hint = "the file is damaged; move it away, or"
    else:
        hint = "check the directory's permissions and free space, or"
    return f"job ledger at {path} is unusable ({detail}): {hint} set {LEDGER_ENV} to another path"


def _get_intent(conn: sqlite3.Connection, intent_id: str) -> JobRecord:
    row = conn.execute(f"{_SELECT} WHERE job_id = ?", (intent_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(f"no ledger row for intent {intent_id}")
    return _record(row)


def _apply_status(
    conn: sqlite3.Connection,
    current: JobRecord,
    new: JobStatus,
    now: float,
    *,
    queue_position: int | None = None,
    error: str | None = None,
    error_type: str | None = None,
    result_urls: list[str] | None = None,
) -> bool:
    """Write ``new`` over ``current`` if the transition table allows it; returns whether it did."""
    if new not in _ALLOWED[current.status]:
        logger.debug("stale status ignored", job_id=current.job_id, current=current.status, new=new)
        return False
    if new != JobStatus.IN_QUEUE:
        position = None
    else:
        position = queue_position if queue_position is not None else current.queue_position
    completed_at = None
    if new in TERMINAL:
        # Keep the first time of a repeated terminal state; a refined one (CANCELLED -> COMPLETED) is new.
        completed_at = current.completed_at if current.status == new else now
    urls = current.result_urls if result_urls is None else result_urls[:MAX_RESULT_URLS]
    conn.execute(
        """UPDATE jobs SET status = ?, queue_position = ?, error = ?, error_type = ?, result_urls = ?,
                          completed_at = ?, updated_at = ?
           WHERE job_id = ?""",
        (
            new,
            position,
            current.error if error is None else redact(error),
            current.error_type if error_type is None else error_type,
            json.dumps(urls),
            completed_at,
            now,
            current.job_id,
        ),
    )
    return True


class OwnedLedger:
    """One owner's view of the ledger: every read and write is that owner's, so callers never pass it.

    :func:`owned_ledger` gives :class:`NoLedger` instead when the ledger could not be opened, so
    callers never check for a missing ledger either. An intent id of ``None`` (none was recorded)
    makes every intent write a no-op.
    """

    available = True
    error: str | None = None

    def __init__(self, ledger: Ledger, owner: str) -> None:
        self._ledger = ledger
        self.owner = owner

    async def record_intent(
        self,
        endpoint_id: str,
        input: Any,
        origin_tool: str,
        *,
        webhook_url: str | None = None,
        cost_estimate_usd: float | None = None,
        digest: str | None = None,
    ) -> str | None:
        return await self._ledger.record_intent(
            endpoint_id,
            self.owner,
            input,
            origin_tool,
            webhook_url=webhook_url,
            cost_estimate_usd=cost_estimate_usd,
            digest=digest,
        )

    async def attach_request_id(
        self,
        intent_id: str | None,
        request_id: str,
        status: JobStatus | str = JobStatus.IN_QUEUE,
        queue_position: int | None = None,
    ) -> None:
        if intent_id is not None:
            await self._ledger.attach_request_id(intent_id, request_id, status=status, queue_position=queue_position)

    async def mark_intent_failed(self, intent_id: str | None, error: str) -> None:
        if intent_id is not None:
            await self._ledger.mark_intent_failed(intent_id, error)

    async def mark_intent_unknown(self, intent_id: str | None, error: str) -> None:
        if intent_id is not None:
            await self._ledger.mark_intent_unknown(intent_id, error)

    async def finish_direct(self, intent_id: str | None, *, failed: str | None = None) -> None:
        if intent_id is not None:
            await self._ledger.finish_direct(intent_id, failed=failed)

    async def update_status(
        self,
        request_id: str,
        status: JobStatus | str,
        *,
        queue_position: int | None = None,
        error: str | None = None,
        error_type: str | None = None,
        result_urls: list[str] | None = None,
    ) -> None:
        await self._ledger.update_status(
            request_id,
            status,
            owner=self.owner,
            queue_position=queue_position,
            error=error,
            error_type=error_type,
            result_urls=result_urls,
        )

    async def get(self, request_id: str) -> JobRecord | None:
        return await self._ledger.get(request_id, self.owner)

    async def prune(self, older_than_days: float, keep_jobs: int) -> int:
        return await self._ledger.prune(older_than_days, keep_jobs, owner=self.owner)

    async def find_reusable(self, endpoint_id: str, input_digest: str, window_seconds: float) -> JobRecord | None:
        return await self._ledger.find_reusable(self.owner, endpoint_id, input_digest, window_seconds)

    async def unresolved_intents(self) -> list[JobRecord]:
        return await self._ledger.unresolved_intents(self.owner)

    async def list(self, status: str | None = None, endpoint_id: str | None = None, limit: int = 20) -> list[JobRecord]:
        return await self._ledger.list(self.owner, status=status, endpoint_id=endpoint_id, limit=limit)

    async def spent_since(self, since: float) -> float:
        return await self._ledger.spent_since(self.owner, since)

    @asynccontextmanager
    async def submit_lease(
        self, endpoint_id: str, input_digest: str, *, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[SubmitLease]:
        """The cross-process submit lease (:meth:`Ledger.submit_lease`)."""
        async with self._ledger.submit_lease(self.owner, endpoint_id, input_digest, on_wait=on_wait) as lease:
            yield lease

    async def abandon_intents(self, endpoint_id: str, input_digest: str, error: str) -> int:
        return await self._ledger.abandon_intents(self.owner, endpoint_id, input_digest, error)


class NoLedger(OwnedLedger):
    """The view when the ledger cannot be opened: it records nothing and finds nothing.

    Jobs still run when the file is unusable (unwritable, no space): no other process can be using it
    either. But a ledger another process holds (``locked``) is shared, and paying without its lease could
    pay twice for one call: then nothing is paid (:meth:`submit_lease` and :meth:`record_intent` raise,
    before anything is sent) until the ledger opens again. Spending cannot be read from it either
    (:meth:`spent_since` raises), so a budget is never taken as unspent.
    """

    available = False

    def __init__(self, owner: str, error: str | None, *, locked: bool = False) -> None:
        self.owner = owner
        self.error = error
        self.locked = locked

    def _refuse_if_shared(self) -> None:
        if self.locked:
            raise LedgerLockedError(
                f"the job ledger is held by another fal-mcp process ({self.error}), so this call could not be "
                "guarded against paying twice; try again in a few seconds"
            )

    async def record_intent(self, *args: Any, **kwargs: Any) -> str | None:
        self._refuse_if_shared()
        return None

    async def attach_request_id(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def mark_intent_failed(self, intent_id: str | None, error: str) -> None:
        return None

    async def mark_intent_unknown(self, intent_id: str | None, error: str) -> None:
        return None

    async def finish_direct(self, intent_id: str | None, *, failed: str | None = None) -> None:
        return None

    async def update_status(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def get(self, request_id: str) -> JobRecord | None:
        return None

    async def prune(self, older_than_days: float, keep_jobs: int) -> int:
        return 0

    async def find_reusable(self, endpoint_id: str, input_digest: str, window_seconds: float) -> JobRecord | None:
        return None

    async def unresolved_intents(self) -> list[JobRecord]:
        return []

    async def list(self, status: str | None = None, endpoint_id: str | None = None, limit: int = 20) -> list[JobRecord]:
        _statuses(status)  # an unknown status is still an error
        return []

    async def spent_since(self, since: float) -> float:
        raise LedgerError(f"the job ledger is unavailable ({self.error}): spending cannot be read")

    @asynccontextmanager
    async def submit_lease(
        self, endpoint_id: str, input_digest: str, *, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[SubmitLease]:
        self._refuse_if_shared()
        yield SubmitLease()  # no file shared with another process: nothing to hold

    async def abandon_intents(self, endpoint_id: str, input_digest: str, error: str) -> int:
        return 0


def owned_ledger(ledger: Ledger | None, owner: str, *, failure: LedgerError | str | None = None) -> OwnedLedger:
    """``owner``'s view of ``ledger``, or :class:`NoLedger` (with why it could not be opened) when there is none."""
    if ledger is not None:
        return OwnedLedger(ledger, owner)
    return NoLedger(owner, None if failure is None else str(failure), locked=isinstance(failure, LedgerLockedError))
