"""The queue (queue.fal.run): submit, status, status stream, result, cancel — with real per-app runners.

Each app (``owner/alias``) has ``concurrency_per_app`` runners; further requests wait IN_QUEUE in
(priority, arrival) order, so ``queue_position`` is the real number of requests ahead.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.emulator.models.base import request_error
from fal_mcp.emulator.run import (
    CallContext,
    CallOptions,
    GatewayError,
    Outcome,
    Target,
    caller_id,
    count_submission,
    execute,
    parse_options,
    read_input,
    resolve,
)
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
_PRIORITY_RANK = {"normal": 0, "low": 1}
# [ns/]owner/alias[/path…]/requests/{id}[/status[/stream]|/response|/cancel][/]
_REQUEST_PATH = re.compile(
    r"^(?P<app>.+?)/requests/(?P<id>[^/]+)(?P<action>/status/stream|/status|/response|/cancel)?/?$"
)


@dataclass(eq=False)
class QueueRecord:
    """One queued request, from submit to (expiry of) its result. Times are epoch seconds."""

    request_id: str
    endpoint_id: str  # as submitted, sub-path included
    target: Target
    input: dict[str, Any]
    options: CallOptions
    queue_base: str  # the queue URL prefix the client used (status/result/cancel URLs are built on it)
    origin: str  # the origin the client used (output file URLs are built on it)
    seq: int
    key_id: str | None = None  # who submitted it: a non-secret name of the key (see ``run.caller_id``)
    status: str = IN_QUEUE
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    outcome: Outcome | None = None
    cancel_requested: bool = False
    cancel_scope: anyio.CancelScope | None = None
    version: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def app(self) -> str:
        return self.target.app

    @property
    def result_status_code(self) -> int | None:
        return self.outcome.status_code if self.outcome else None

    @property
    def result_body(self) -> Any:
        return self.outcome.body if self.outcome else None

    @property
    def error(self) -> str | None:
        return self.outcome.error if self.outcome else None

    @property
    def error_type(self) -> str | None:
        return self.outcome.error_type if self.outcome else None

    @property
    def response_url(self) -> str:
        return f"{self.queue_base}/{self.app}/requests/{self.request_id}"

    def touch(self) -> None:
        """Wake every status stream watching this request."""
        self.version += 1
        self.changed.set()
        self.changed = anyio.Event()

    def urls(self) -> dict[str, str]:
        return {
            "response_url": self.response_url,
            "status_url": f"{self.response_url}/status",
            "cancel_url": f"{self.response_url}/cancel",
        }

    def summary(self, payload_limit: int) -> RequestSummary:
        """What request history keeps once the result has expired: times, status and small payloads."""
        return RequestSummary(
            request_id=self.request_id,
            endpoint_id=self.endpoint_id,
            key_id=self.key_id,
            seq=self.seq,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            expires_at=self.expires_at,
            result_status_code=self.result_status_code,
            input=_small(self.input, payload_limit),
            result_body=_small(self.result_body, payload_limit),
        )


@dataclass(frozen=True)
class RequestSummary:
    """A finished request whose result has expired: all request history still needs (``requests_for``).

    Payloads larger than ``history_payload_bytes`` are dropped (``None``), so history stays small.
    """

    request_id: str
    endpoint_id: str
    key_id: str | None
    seq: int
    submitted_at: float
    started_at: float | None
    completed_at: float | None
    expires_at: float | None
    result_status_code: int | None
    input: Any
    result_body: Any
    status: str = COMPLETED
    purged: bool = True


def _small(payload: Any, limit: int) -> Any:
    return payload if len(json.dumps(payload).encode()) <= limit else None


class QueueEngine:
    """Records, per-app waiting lists and runners. Runs on the server's event loop only."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._records: dict[str, QueueRecord] = {}
        self._waiting: dict[str, list[QueueRecord]] = defaultdict(list)
        self._running: dict[str, set[QueueRecord]] = defaultdict(set)
        self._seq = itertools.count()
        # Expiry times of completed records (a min-heap), and what is left of purged ones, oldest first.
        self._expiries: list[tuple[float, int, str]] = []
        self._history: OrderedDict[str, RequestSummary] = OrderedDict()

    # -- queries -------------------------------------------------------------------------------

    def get(self, request_id: str) -> QueueRecord | None:
        """A live request; None when unknown or when its result's retention has passed."""
        self.purge()
        record = self._records.get(request_id)
        if record is None or (record.expires_at is not None and time.time() > record.expires_at):
            return None
        return record

    def requests_for(self, endpoint_id: str) -> list[QueueRecord | RequestSummary]:
        """Every request submitted to ``endpoint_id`` (exact id), oldest first — request history.

        Live requests are their :class:`QueueRecord`; expired ones a :class:`RequestSummary`.
        """
        self.purge()
        wanted = endpoint_id.strip("/")
        found: list[QueueRecord | RequestSummary] = [r for r in self._history.values() if r.endpoint_id == wanted]
        found += [r for r in self._records.values() if r.endpoint_id == wanted]
        return sorted(found, key=lambda r: r.seq)

    def purge(self) -> int:
        """Forget the full records whose result retention has passed, keeping a summary in history.

        Called on every submit and lookup, so a long-running emulator holds at most the live
        requests plus ``history_limit`` summaries. Returns how many records were purged.
        """
        now, config = time.time(), self.state.config
        purged = 0
        while self._expiries and self._expiries[0][0] < now:
            _, _, request_id = heapq.heappop(self._expiries)
            record = self._records.pop(request_id, None)
            if record is None:
                continue
            self._history[request_id] = record.summary(config.history_payload_bytes)
            purged += 1
        while len(self._history) > max(0, config.history_limit):
            self._history.popitem(last=False)
        if purged:
            log.debug("emulated queue purged expired requests", purged=purged, live=len(self._records))
        return purged

    @property
    def live(self) -> int:
        """How many full records are held (queued, running, or finished within retention)."""
        return len(self._records)

    def waiting(self, app: str) -> int:
        return len(self._waiting[app])

    def position(self, record: QueueRecord) -> int:
        """Requests ahead of ``record`` in its app's queue (0: next to start)."""
        try:
            return self._waiting[record.app].index(record)
        except ValueError:
            return 0

    # -- lifecycle -----------------------------------------------------------------------------

    def submit(
        self,
        target: Target,
        data: dict[str, Any],
        options: CallOptions,
        *,
        queue_base: str,
        origin: str,
        key_id: str | None = None,
    ) -> QueueRecord:
        self.purge()
        record = QueueRecord(
            request_id=str(uuid.uuid4()),
            endpoint_id=target.path,
            target=target,
            input=data,
            options=options,
            queue_base=queue_base,
            origin=origin,
            seq=next(self._seq),
            key_id=key_id,
        )
        self._records[record.request_id] = record
        count_submission(self.state, target.path, data)
        queue = self._waiting[record.app]
        queue.append(record)
        queue.sort(key=lambda r: (_PRIORITY_RANK[r.options.priority], r.seq))
        if options.start_timeout is not None:
            self.state.spawn(self._expire_unstarted, record, options.start_timeout)
        self._changed_queue(record.app)
        return record

    def cancel(self, record: QueueRecord) -> bool:
        """Request cancellation; False when the request had already completed."""
        if record.status == COMPLETED:
            return False
        if record.status == IN_QUEUE:
            self._waiting[record.app].remove(record)
            self._complete(record, _cancelled())
            self._changed_queue(record.app)
        else:
            record.cancel_requested = True
            if record.cancel_scope is not None:
                record.cancel_scope.cancel()
        return True

    def _changed_queue(self, app: str) -> None:
        """Start what fits into free runners, then tell every waiting request its position may have moved."""
        waiting, running = self._waiting[app], self._running[app]
        while waiting and len(running) < max(1, self.state.config.concurrency_per_app):
            record = waiting.pop(0)
            record.status, record.started_at = IN_PROGRESS, time.time()
            running.add(record)
            self.state.spawn(self._run, record)
            record.touch()
        for record in waiting:
            record.touch()

    async def _run(self, record: QueueRecord) -> None:
        def add_log(entry: dict[str, Any]) -> None:
            record.logs.append(entry)
            record.touch()

        ctx = CallContext(self.state, record.request_id, record.origin, add_log)
        outcome: Outcome | None = None
        with anyio.CancelScope() as scope:
            record.cancel_scope = scope
            if record.cancel_requested:
                scope.cancel()
            outcome = await execute(record.target, record.input, ctx)
        record.cancel_scope = None
        self._running[record.app].discard(record)
        self._complete(record, outcome if outcome is not None and not scope.cancel_called else _cancelled())
        self._changed_queue(record.app)

    async def _expire_unstarted(self, record: QueueRecord, timeout: float) -> None:
        """Fail a request whose ``X-Fal-Request-Timeout`` passed before a runner picked it up."""
        await anyio.sleep(max(0.0, record.submitted_at + timeout - time.time()))
        if record.status == IN_QUEUE:
            self._waiting[record.app].remove(record)
            outcome = Outcome.from_error(
                request_error("startup_timeout", "Request timed out before it could start"),
                **{"x-fal-request-timeout-type": "user"},
            )
            self._complete(record, outcome)
            self._changed_queue(record.app)

    def _complete(self, record: QueueRecord, outcome: Outcome) -> None:
        config = self.state.config
        record.status, record.outcome, record.completed_at = COMPLETED, outcome, time.time()
        size = len(json.dumps(outcome.body).encode())
        large = size >= config.large_result_bytes
        retention = config.large_result_retention_seconds if large else config.result_retention_seconds
        record.expires_at = record.completed_at + retention
        heapq.heappush(self._expiries, (record.expires_at, record.seq, record.request_id))
        record.touch()
        log.debug("emulated request completed", request_id=record.request_id, status=outcome.status_code)
        if record.options.webhook_url:
            self.state.spawn(self._deliver_webhook, record, outcome, record.options.webhook_url)

    async def _deliver_webhook(self, record: QueueRecord, outcome: Outcome, url: str) -> None:
        await self.state.webhooks.deliver(
            url=url,
            request_id=record.request_id,
            gateway_request_id=record.request_id,
            status="OK" if outcome.ok else "ERROR",
            payload=outcome.body,
            error=None if outcome.ok else f"Invalid status code: {outcome.status_code}",
        )

    # -- status bodies -------------------------------------------------------------------------

    def status_body(self, record: QueueRecord, logs: list[dict[str, Any]] | None) -> dict:
        """fal's QueueStatus: every key its schema names — ``logs`` (list, or null unless asked for) and
        ``metrics`` (``{}`` until completion) always, ``queue_position`` while queued.

        A failed request's ``error``/``error_type`` appear only for request errors (timeouts, cancellation,
        runner failures); a model's own error (a 422 ``detail`` list, a 404 path) is only at the result.
        """
        body: dict[str, Any] = {"status": record.status, "request_id": record.request_id, **record.urls()}
        if record.status == IN_QUEUE:
            body["queue_position"] = self.position(record)
        body["logs"] = logs
        body["metrics"] = {}
        if record.status == COMPLETED:
            started, completed = record.started_at, record.completed_at
            if started and completed:
                body["metrics"] = {"inference_time": completed - started}
            if record.error_type is not None:
                body["error"], body["error_type"] = record.error, record.error_type
        return body


def _cancelled() -> Outcome:
    return Outcome.from_error(request_error("client_cancelled", "Request cancelled by the client."))


def _wants_logs(request: Request) -> bool:
    return request.query_params.get("logs", "0").strip().lower() in ("1", "true", "yes")


def _not_found() -> JSONResponse:
    return JSONResponse({"status": "NOT_FOUND"}, status_code=404)


# -- routes ------------------------------------------------------------------------------------


async def submit(request: Request, state: EmulatorState, path: str) -> Response:
    try:
        options = parse_options(request)
        target = resolve(state, path)
        data = await read_input(request, state.config.max_request_body_bytes)
        limit = options.max_queue_length
        if limit is not None and state.queue.waiting(target.app) >= limit:
            raise GatewayError(429, {"detail": f"Queue is full: fal_max_queue_length={limit} requests already wait"})
    except GatewayError as exc:
        return exc.response
    record = state.queue.submit(
        target,
        data,
        options,
        queue_base=state.public_base(request, "queue"),
        origin=state.public_base(request),
        key_id=caller_id(request),
    )
    body: dict[str, Any] = {
        "status": IN_QUEUE,
        "request_id": record.request_id,
        **record.urls(),
        "queue_position": state.queue.position(record),
    }
    if options.webhook_url:
        body["gateway_request_id"] = record.request_id
    return JSONResponse(body, headers={"x-fal-request-id": record.request_id})


async def status(request: Request, state: EmulatorState, record: QueueRecord) -> Response:
    body = state.queue.status_body(record, list(record.logs) if _wants_logs(request) else None)
    code = 200 if record.status == COMPLETED else 202
    return JSONResponse(body, status_code=code, headers={"x-fal-request-id": record.request_id})


async def status_stream(request: Request, state: EmulatorState, record: QueueRecord) -> Response:
    with_logs = _wants_logs(request)
    ping = max(0.01, state.config.ping_interval_seconds)

    async def events() -> AsyncIterator[str]:
        sent_logs = 0
        last: tuple[str, int] | None = None
        while True:
            version, changed = record.version, record.changed
            new_logs = record.logs[sent_logs:]
            sent_logs = len(record.logs)
            key = (record.status, state.queue.position(record))
            if key != last or (with_logs and new_logs):
                body = state.queue.status_body(record, new_logs if with_logs else None)
                yield f"data: {json.dumps(body)}\n\n"
                last = key
            if record.status == COMPLETED:
                return
            while record.version == version:
                with anyio.move_on_after(ping):
                    await changed.wait()
                if record.version == version:
                    yield ": ping\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"x-fal-request-id": record.request_id, "cache-control": "no-cache"},
    )


async def result(request: Request, state: EmulatorState, record: QueueRecord) -> Response:
    if record.outcome is None:  # not finished: 202 + status, like other fal emulators (undocumented)
        return await status(request, state, record)
    return record.outcome.response(record.request_id)


async def cancel(request: Request, state: EmulatorState, record: QueueRecord) -> Response:
    headers = {"x-fal-request-id": record.request_id}
    if not state.queue.cancel(record):
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400, headers=headers)
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)


_ACTIONS = {
    ("GET", "/status"): status,
    ("GET", "/status/stream"): status_stream,
    ("GET", None): result,
    ("GET", "/response"): result,
    ("PUT", "/cancel"): cancel,
}


async def dispatch(request: Request) -> Response:
    """One route for the whole queue: ``POST`` anything is a submit; the rest addresses ``…/requests/{id}``."""
    state: EmulatorState = request.app.state.emulator
    if denied := state.auth_error(request):
        return denied
    path = request.path_params["path"].strip("/")
    match = _REQUEST_PATH.match(path)
    if request.method == "POST":
        return await submit(request, state, path)
    if match is None:
        return _not_found()
    handler = _ACTIONS.get((request.method, match["action"]))
    if handler is None:
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405)
    record = state.queue.get(match["id"])
    given = match["app"]
    if record is None or not (given == record.app or given.startswith(record.app + "/")):
        return _not_found()
    return await handler(request, state, record)


def routes(state: EmulatorState) -> list[BaseRoute]:
    return [Route("/{path:path}", dispatch, methods=["GET", "POST", "PUT"])]
