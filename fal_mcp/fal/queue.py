"""fal's queue (``queue.fal.run``, fal-protocol.md §3): submit, status, status stream, result, cancel, wait.

Two guarantees shape this module:

- **No double submits.** A submit is sent again only when it provably never reached fal (the HTTP
  layer's retry policy: no connection was made, or fal refused it outright). A submit whose answer was
  lost after it was sent is never re-sent: it is looked up in fal's request history
  (:meth:`QueueAPI.find_submission`), and if it is not there (yet) the caller gets
  :class:`SubmitOutcomeUnknownError` and must keep looking, not submit again.
- **Cheap waits.** :meth:`QueueAPI.wait` follows one SSE status stream for the whole job (so its
  cost does not grow with the job's length) and falls back to polling only when the stream fails.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import httpx2
import pydantic

from fal_mcp.digest import input_digest as digest_of
from fal_mcp.fal._http import FalHTTP, fal_headers, request_was_sent
from fal_mcp.fal.endpoint import EndpointId, check_request_id
from fal_mcp.fal.errors import (
    AuthenticationError,
    BadRequestError,
    FalAPIError,
    FalConnectionError,
    FalError,
    IngressError,
    NotFoundError,
    PermissionDeniedError,
    ResultNotReadyError,
    SubmitOutcomeUnknownError,
)
from fal_mcp.fal.models import (
    CancelOutcome,
    Completed,
    InProgress,
    JobHandle,
    LogEntry,
    Queued,
    QueueStatus,
    WaitEvent,
)
from fal_mcp.fal.retry import ReconcilePolicy, RetryMode
from fal_mcp.log import get_logger

log = get_logger(__name__)

SUBMIT_TIMEOUT = httpx2.Timeout(120.0, connect=10.0)  # fal_client's default_timeout for submits
READ_TIMEOUT = httpx2.Timeout(120.0, connect=10.0)  # status, result, cancel, history
_CLAIMED_LIMIT = 10_000


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _epoch(value: Any) -> float | None:
    """A history timestamp (ISO string or epoch number) as epoch seconds; None when unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def may_have_reached_fal(error: FalError) -> bool:
    """Whether a failed submit (or direct run) may have been queued or run: its answer was lost after
    sending, or fal's edge answered 502/504 (it may have forwarded the request before failing). A 503 edge
    page, a 429 and a connection that was never made are refusals: nothing was queued. Any other answer
    from fal (a 404 for an unknown app, a 422, a 401, …) is fal's definite word, not a lost one."""
    if isinstance(error, IngressError):
        return error.status_code in (502, 504)
    return isinstance(error, FalConnectionError) and request_was_sent(error)


def _attach_request_id(error: FalError, request_id: str) -> None:
    """Make sure an error leaving a job-scoped call names the job, so a caller never loses it."""
    if error.request_id != request_id:
        error.request_id = request_id


def parse_status(data: Any, request_id: str) -> QueueStatus:
    """fal's status JSON → :class:`QueueStatus`; anything else is a clear :class:`FalAPIError`."""
    if not isinstance(data, Mapping):
        raise FalAPIError("fal answered a status request with something that is not a status", request_id=request_id)
    try:
        return QueueStatus.model_validate({"request_id": request_id, **data})
    except pydantic.ValidationError as exc:
        raise FalAPIError(
            f"fal answered with an unexpected status {data.get('status')!r} for request {request_id}",
            request_id=request_id,
            body=dict(data),
        ) from exc


class _Progress:
    """Turns a sequence of statuses (streamed or polled) into wait events, each log line once."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.done = False
        self._seen: set[tuple[str, str]] = set()
        self._phase: str | None = None
        self._position: int | None = None

    def _new_logs(self, entries: list[LogEntry] | None) -> tuple[LogEntry, ...]:
        fresh = []
        for entry in entries or ():
            if entry.key not in self._seen:
                self._seen.add(entry.key)
                fresh.append(entry)
        return tuple(fresh)

    def update(self, status: QueueStatus) -> list[WaitEvent]:
        new_logs = self._new_logs(status.logs)
        events: list[WaitEvent] = []
        if status.status == "IN_QUEUE":
            position = status.queue_position or 0
            if self._phase != "IN_QUEUE" or position != self._position:
                events.append(Queued(request_id=self.request_id, position=position))
            self._position = position
        elif status.status == "IN_PROGRESS":
            if self._phase != "IN_PROGRESS" or new_logs:
                events.append(InProgress(request_id=self.request_id, logs=new_logs))
        else:
            events.append(
                Completed(
                    request_id=self.request_id,
                    logs=new_logs,
                    metrics=status.metrics,
                    error=status.error,
                    error_type=status.error_type,
                )
            )
            self.done = True
        self._phase = status.status
        return events


class QueueAPI:
    """fal's queue. Endpoint and request ids are validated before any request is made."""

    def __init__(
        self,
        http: FalHTTP,
        *,
        reconcile: ReconcilePolicy | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 2.0,
        stream_idle_timeout: float = 30.0,
        max_stream_resumes: int = 3,
    ) -> None:
        self._http = http
        self.reconcile = reconcile or ReconcilePolicy()
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.stream_idle_timeout = stream_idle_timeout
        self.max_stream_resumes = max_stream_resumes
        # Request ids this client already handed out: reconciliation must never claim one twice.
        self._claimed: OrderedDict[str, None] = OrderedDict()

    # -- handles -----------------------------------------------------------------------------

    def handle(
        self,
        endpoint_id: str,
        request_id: str,
        *,
        queue_position: int | None = None,
        input_digest: str | None = None,
        reconciled: bool = False,
    ) -> JobHandle:
        """A handle for a known request; its URLs come from our configured queue host, never from fal's answers."""
        endpoint = EndpointId.parse(endpoint_id)
        rid = check_request_id(request_id)
        base = self._http.url("queue", f"{endpoint.app}/requests/{rid}")
        return JobHandle(
            endpoint_id=str(endpoint),
            request_id=rid,
            status_url=f"{base}/status",
            response_url=base,
            cancel_url=f"{base}/cancel",
            queue_position=queue_position,
            input_digest=input_digest,
            reconciled=reconciled,
        )

    def _claim(self, request_id: str) -> None:
        self._claimed[request_id] = None
        self._claimed.move_to_end(request_id)
        while len(self._claimed) > _CLAIMED_LIMIT:
            self._claimed.popitem(last=False)

    # -- submit ------------------------------------------------------------------------------

    async def submit(
        self,
        endpoint_id: str,
        input: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        priority: Literal["normal", "low"] | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        store_io: bool | None = None,
        object_lifecycle: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        reconcile: bool | None = None,
        known_request_ids: Collection[str] = (),
    ) -> JobHandle:
        """Queue a request. Refusals that provably never reached fal are retried by the HTTP layer;
        a lost answer is looked up in fal's request history (see :class:`ReconcilePolicy`) and, when it
        is not there, raises :class:`SubmitOutcomeUnknownError` — it is never sent again.

        ``reconcile=False`` raises :class:`SubmitOutcomeUnknownError` on a lost answer at once;
        ``known_request_ids`` are ids the caller already owns, never claimed by reconciliation.
        """
        endpoint = EndpointId.parse(endpoint_id)
        body = dict(input)
        url = self._http.url("queue", str(endpoint))
        headers = fal_headers(
            start_timeout=start_timeout,
            hint=hint,
            priority=priority,
            store_io=store_io,
            object_lifecycle=object_lifecycle,
            extra_headers=extra_headers,
        )
        params = {"fal_webhook": webhook_url} if webhook_url else None
        digest = digest_of(body)
        policy = self.reconcile if reconcile is None else replace(self.reconcile, enabled=reconcile)
        sent_at = time.time()
        try:
            data = await self._http.request_json(
                "POST",
                url,
                mode=RetryMode.SUBMIT,
                params=params,
                json_body=body,
                headers=headers,
                timeout=SUBMIT_TIMEOUT,
            )
        except (FalConnectionError, IngressError) as exc:
            if not may_have_reached_fal(exc):
                raise
            log.warning("fal.submit.answer_lost", endpoint_id=str(endpoint), digest=digest[:16], error=exc.message)
            if not policy.enabled:
                raise self._outcome_unknown(endpoint, digest, sent_at, "reconciliation is off") from exc
            found = await self._reconcile(endpoint, digest, sent_at, known_request_ids, policy)
            if found is not None:
                return found
            raise self._outcome_unknown(
                endpoint,
                digest,
                sent_at,
                "fal's request history does not list it (yet: fal lists a request only once it has finished)",
            ) from exc
        return self._submitted(endpoint, data, digest)

    def _submitted(self, endpoint: EndpointId, data: Any, digest: str) -> JobHandle:
        request_id = data.get("request_id") if isinstance(data, Mapping) else None
        if not isinstance(request_id, str):
            raise FalAPIError("fal accepted the submit but its answer has no request_id", body=data)
        position = data.get("queue_position")
        handle = self.handle(
            str(endpoint),
            request_id,
            queue_position=position if isinstance(position, int) else None,
            input_digest=digest,
        )
        self._claim(handle.request_id)
        return handle

    def _outcome_unknown(
        self, endpoint: EndpointId, digest: str, sent_at: float, why: str
    ) -> SubmitOutcomeUnknownError:
        return SubmitOutcomeUnknownError(
            f"the submit to {endpoint} sent at {_iso(sent_at)} lost its answer and {why}; fal may or may not have "
            f"queued it. It was not sent again. Check fal's request history (input digest {digest}) before "
            "submitting again.",
            endpoint_id=str(endpoint),
            input_digest=digest,
            sent_at=sent_at,
        )

    async def _reconcile(
        self,
        endpoint: EndpointId,
        digest: str,
        sent_at: float,
        known: Collection[str],
        policy: ReconcilePolicy,
    ) -> JobHandle | None:
        """Look the lost submit up in fal's history, a few times (history may lag)."""
        delay = policy.delay
        for lookup in range(1, max(1, policy.lookups) + 1):
            try:
                found = await self._find(endpoint, digest, sent_at - policy.window, known, policy.page_limit)
            except FalError as exc:
                raise self._outcome_unknown(
                    endpoint, digest, sent_at, f"fal's request history is unavailable ({exc.message})"
                ) from exc
            if found is not None:
                log.info("fal.submit.reconciled", endpoint_id=str(endpoint), request_id=found.request_id, lookup=lookup)
                return found
            if lookup < policy.lookups:
                await anyio.sleep(delay)
                delay *= 2
        return None

    async def find_submission(
        self,
        endpoint_id: str,
        input: Mapping[str, Any] | None = None,
        *,
        digest: str | None = None,
        since: float,
        exclude: Collection[str] = (),
    ) -> JobHandle | None:
        """The request fal queued for ``input`` (or its ``digest``) at or after ``since`` (epoch), not in ``exclude``.

        One scan of fal's request history (for e.g. a restarted server's unfinished submits); raises the
        :class:`FalError` when the history cannot be read and :class:`SubmitOutcomeUnknownError` when it
        lacks the payloads needed to tell.
        """
        if digest is None:
            if input is None:
                raise ValueError("find_submission needs the input or its digest")
            digest = digest_of(dict(input))
        endpoint = EndpointId.parse(endpoint_id)
        return await self._find(endpoint, digest, since, exclude, self.reconcile.page_limit)

    async def _find(
        self, endpoint: EndpointId, digest: str, since: float, exclude: Collection[str], page_limit: int
    ) -> JobHandle | None:
        url = self._http.url("platform", "models/requests/by-endpoint")
        params: dict[str, Any] = {
            "endpoint_id": str(endpoint),
            "start": _iso(since),
            "expand": "payloads",
            "limit": page_limit,
        }
        matches: list[tuple[float, str]] = []
        without_payload = 0
        for _page in range(20):
            data = await self._http.request_json(
                "GET", url, mode=RetryMode.IDEMPOTENT, params=params, timeout=READ_TIMEOUT
            )
            items = data.get("items") if isinstance(data, Mapping) else None
            if not isinstance(items, list):
                raise FalAPIError("fal's request history answered in an unexpected shape", body=data)
            for item in items:
                if not isinstance(item, Mapping) or not isinstance(item.get("request_id"), str):
                    continue
                request_id = item["request_id"]
                if request_id in exclude or request_id in self._claimed:
                    continue
                if item.get("endpoint_id") not in (None, str(endpoint)):
                    continue
                when = _epoch(item.get("sent_at")) or _epoch(item.get("started_at"))
                if when is not None and when < since:
                    continue
                if "json_input" not in item:
                    without_payload += 1
                elif digest_of(item["json_input"]) == digest:
                    matches.append((abs((when or since) - since), request_id))
            cursor = data.get("next_cursor")
            if not data.get("has_more") or not cursor:
                break
            params["cursor"] = cursor
        if not matches and without_payload:
            raise SubmitOutcomeUnknownError(
                f"fal's request history lists {without_payload} request(s) to {endpoint} without their inputs "
                "(X-Fal-Store-IO: 0?), so a lost submit cannot be told apart from them",
                endpoint_id=str(endpoint),
                input_digest=digest,
                sent_at=since,
            )
        if not matches:
            return None
        # Oldest unclaimed match closest to the send time: identical inputs submitted together are
        # handed out one each, because the claim happens before any other task can run.
        request_id = min(matches)[1]
        handle = self.handle(str(endpoint), request_id, input_digest=digest, reconciled=True)
        self._claim(handle.request_id)
        return handle

    # -- status, result, cancel ----------------------------------------------------------------

    def _not_found(self, handle: JobHandle, error: FalAPIError) -> NotFoundError:
        return NotFoundError(
            f"fal has no request {handle.request_id} for {EndpointId.parse(handle.endpoint_id).app}: the id is wrong, "
            "belongs to another app or key, or its result has expired (fal keeps results about an hour)",
            status_code=404,
            error_type=error.error_type,
            request_id=handle.request_id,
            body=error.body,
        )

    async def status(self, endpoint_id: str, request_id: str, logs: bool = False) -> QueueStatus:
        handle = self.handle(endpoint_id, request_id)
        try:
            data = await self._http.request_json(
                "GET",
                handle.status_url,
                mode=RetryMode.IDEMPOTENT,
                params={"logs": "1" if logs else "0"},
                timeout=READ_TIMEOUT,
            )
        except NotFoundError as exc:
            raise self._not_found(handle, exc) from None
        return parse_status(data, handle.request_id)

    async def status_stream(self, endpoint_id: str, request_id: str, logs: bool = True) -> AsyncIterator[QueueStatus]:
        """Statuses from fal's SSE stream (``…/status/stream``) until ``COMPLETED``.

        Raises :class:`FalConnectionError` if the stream ends or stalls (no byte, not even a
        keep-alive, for ``stream_idle_timeout`` s) before completion. Iterate it inside
        ``contextlib.aclosing`` so the connection is released when you stop early.
        """
        handle = self.handle(endpoint_id, request_id)
        timeout = httpx2.Timeout(10.0, read=self.stream_idle_timeout)
        async with self._http.stream(
            "GET",
            f"{handle.status_url}/stream",
            mode=RetryMode.IDEMPOTENT,
            params={"logs": "1" if logs else "0"},
            headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
            timeout=timeout,
        ) as response:
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "text/event-stream":
                raise FalAPIError(
                    f"fal's status stream answered {content_type or 'no content type'}, not text/event-stream",
                    status_code=response.status_code,
                    request_id=handle.request_id,
                )
            async for event in httpx2.EventSource(response):
                if not event.data.strip():
                    continue
                try:
                    data = event.json()
                except ValueError as exc:
                    raise FalConnectionError(f"fal's status stream sent malformed data: {event.data[:200]!r}") from exc
                status = parse_status(data, handle.request_id)
                yield status
                if status.completed:
                    return
        raise FalConnectionError(f"fal's status stream for request {handle.request_id} ended before it completed")

    async def result(self, endpoint_id: str, request_id: str) -> dict[str, Any]:
        """The output of a completed request; a failed one raises the error fal replays (e.g. 422 field errors)."""
        handle = self.handle(endpoint_id, request_id)
        try:
            response = await self._http.request(
                "GET", handle.response_url, mode=RetryMode.IDEMPOTENT, timeout=READ_TIMEOUT
            )
        except NotFoundError as exc:
            raise self._not_found(handle, exc) from None
        except FalAPIError as exc:
            _attach_request_id(exc, handle.request_id)
            raise
        try:
            data = response.json()
        except ValueError as exc:
            raise FalAPIError(
                "fal answered the result request with a body that is not JSON",
                status_code=response.status_code,
                request_id=handle.request_id,
            ) from exc
        if response.status_code == 202 or (
            isinstance(data, Mapping) and data.get("status") in ("IN_QUEUE", "IN_PROGRESS") and "request_id" in data
        ):
            raise ResultNotReadyError(
                f"request {handle.request_id} has not completed yet ({data.get('status', 'running')}); "
                "wait for it, then fetch the result",
                status_code=response.status_code,
                error_type="request_not_completed",
                request_id=handle.request_id,
                body=data,
            )
        if not isinstance(data, dict):
            raise FalAPIError("fal's result is not a JSON object", request_id=handle.request_id, body=data)
        return data

    async def cancel(self, endpoint_id: str, request_id: str) -> CancelOutcome:
        handle = self.handle(endpoint_id, request_id)
        try:
            await self._http.request("PUT", handle.cancel_url, mode=RetryMode.IDEMPOTENT, timeout=READ_TIMEOUT)
        except NotFoundError as exc:
            raise self._not_found(handle, exc) from None
        except BadRequestError as exc:
            if isinstance(exc.body, Mapping) and exc.body.get("status") == "ALREADY_COMPLETED":
                return CancelOutcome.ALREADY_COMPLETED
            _attach_request_id(exc, handle.request_id)
            raise
        except FalAPIError as exc:
            _attach_request_id(exc, handle.request_id)
            raise
        return CancelOutcome.CANCELLATION_REQUESTED

    # -- waiting -------------------------------------------------------------------------------

    async def wait(
        self,
        endpoint_id: str,
        request_id: str,
        *,
        logs: bool = True,
        poll_interval: float | None = None,
        stream: bool = True,
    ) -> AsyncIterator[WaitEvent]:
        """Yield :class:`Queued` / :class:`InProgress` / :class:`Completed` until the request completes.

        Follows the status stream (one request for the whole job); if the stream is unavailable it
        polls (``poll_interval`` growing to ``max_poll_interval``); if it breaks it resumes it (up to
        ``max_stream_resumes`` times, then polls). Log lines are yielded once each. Every error raised
        carries ``request_id``. Bound it with a cancel scope; iterate it inside ``contextlib.aclosing``.
        """
        handle = self.handle(endpoint_id, request_id)
        progress = _Progress(handle.request_id)
        interval = poll_interval or self.poll_interval
        streaming, breaks = stream, 0
        try:
            while True:
                if streaming:
                    try:
                        async with aclosing(  # type: ignore[type-var]
                            self.status_stream(handle.endpoint_id, handle.request_id, logs)
                        ) as statuses:
                            async for status in statuses:
                                for event in progress.update(status):
                                    yield event
                                if progress.done:
                                    return
                    except (AuthenticationError, PermissionDeniedError):
                        raise
                    except FalAPIError as exc:
                        log.info("fal.status_stream.unavailable", request_id=handle.request_id, error=exc.message)
                        streaming = False  # polling will tell a real error (e.g. an unknown id) from a missing stream
                    except FalConnectionError as exc:
                        breaks += 1
                        streaming = breaks <= self.max_stream_resumes
                        log.info(
                            "fal.status_stream.broken",
                            request_id=handle.request_id,
                            error=exc.message,
                            resume=streaming,
                        )
                        if streaming:
                            continue
                status = await self.status(handle.endpoint_id, handle.request_id, logs=logs)
                for event in progress.update(status):
                    yield event
                if progress.done:
                    return
                await anyio.sleep(interval)
                interval = min(interval * 1.5, self.max_poll_interval)
        except FalError as exc:
            _attach_request_id(exc, handle.request_id)
            raise

    async def subscribe(
        self,
        endpoint_id: str,
        input: Mapping[str, Any],
        *,
        logs: bool = False,
        on_event: Callable[[WaitEvent], Awaitable[None] | None] | None = None,
        **submit_options: Any,
    ) -> tuple[JobHandle, dict[str, Any]]:
        """Submit, wait, fetch the result: ``(handle, output)``. Failed jobs raise fal's replayed error."""
        handle = await self.submit(endpoint_id, input, **submit_options)
        async with aclosing(self.wait(handle.endpoint_id, handle.request_id, logs=logs)) as events:  # type: ignore[type-var]
            async for event in events:
                if on_event is not None:
                    maybe = on_event(event)
                    if maybe is not None:
                        await maybe
        return handle, await self.result(handle.endpoint_id, handle.request_id)
