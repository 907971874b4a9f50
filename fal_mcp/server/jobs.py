"""Running a queue job for a tool: submit through the ledger, wait with progress, never orphan it.

The flow every waiting tool shares: record the intent, submit, wait at most ``wait_seconds`` while
streaming progress, and either return the result or the request id to resume with. When the client
cancels a waiting call, the fal request is cancelled too (unless configured to keep running), and the
ledger records it either way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from fal_mcp.fal import errors as fe
from fal_mcp.fal.endpoint import EndpointId, check_request_id
from fal_mcp.ledger import LeaseBusyError, LedgerError
from fal_mcp.log import get_logger
from fal_mcp.server.errors import ToolFailure
from fal_mcp.server.progress import ProgressReporter, steps_in

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from fal_mcp.config import Settings
    from fal_mcp.fal.client import FalClient
    from fal_mcp.fal.models import RunResult
    from fal_mcp.ledger import OwnedLedger
    from fal_mcp.server.state import ServerState

log = get_logger(__name__)


@dataclass
class Call:
    """One tool call's view of the server: its fal client (its user's key), ledger owner and progress."""

    state: ServerState
    ctx: Context | None
    fal: FalClient
    owner: str
    ledger: OwnedLedger
    reporter: ProgressReporter
    tool: str
    started: float = field(default_factory=time.monotonic)

    @classmethod
    async def start(cls, ctx: Context | None, tool: str) -> Call:
        state: ServerState = ctx.request_context.lifespan_context  # type: ignore[union-attr, assignment]
        fal, owner = await state.fal_for(ctx)
        ledger = await state.ledger_for(owner)
        send = ctx.report_progress if ctx is not None else None
        reporter = ProgressReporter(send, heartbeat_seconds=state.settings.heartbeat_seconds)
        return cls(state=state, ctx=ctx, fal=fal, owner=owner, ledger=ledger, reporter=reporter, tool=tool)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)


# Claude Code (>= 2.1.212) moves a tool call still running after 2 minutes into the background and
# delivers its result when it ends; its stdio idle timeout is 30 minutes, reset by every progress
# notification (the heartbeat sends one every few seconds). So there a call may wait for the job far
# longer than the ~50 s other hosts tolerate, saving the model a queue_result round trip per minute;
# 15 minutes stays well under the idle timeout even if progress stopped resetting it.
DEFAULT_WAIT_SECONDS = 50.0
LONG_WAIT_CLIENTS: dict[str, float] = {"claude-code": 900.0}


def client_name(ctx: Context | None) -> str | None:
    """The connected client's ``clientInfo.name`` (either protocol era), when it sent one."""
    try:
        params = ctx.session.client_params  # type: ignore[union-attr]
    except (AttributeError, LookupError, ValueError):
        return None
    return getattr(getattr(params, "client_info", None), "name", None)


def default_wait_seconds(settings: Settings, ctx: Context | None, requested: float | None = None) -> float:
    """How long a waiting tool waits: the call's ``wait_seconds``, else ``FAL_MCP_WAIT_SECONDS`` when set,
    else a client-aware default (long for Claude Code, ~50 s for every other host)."""
    if requested is not None:
        return requested
    if settings.wait_seconds is not None:
        return settings.wait_seconds
    return LONG_WAIT_CLIENTS.get(client_name(ctx) or "", DEFAULT_WAIT_SECONDS)


@dataclass
class WaitOutcome:
    """Where a bounded wait ended: ``completed`` is set when fal reported the job finished."""

    status: str = "IN_QUEUE"
    queue_position: int | None = None
    logs: list[str] = field(default_factory=list)
    completed: Any = None  # fal_mcp.fal.models.Completed
    events: int = 0

    @property
    def done(self) -> bool:
        return self.completed is not None


def parse_endpoint(endpoint_id: str) -> str:
    return str(EndpointId.parse(endpoint_id))


async def resolve_endpoint(call: Call, request_id: str, endpoint_id: str | None) -> tuple[str, str]:
    """(request_id, endpoint_id): the endpoint may be omitted when the job is in this user's ledger."""
    request_id = check_request_id(request_id)
    if endpoint_id:
        return request_id, parse_endpoint(endpoint_id)
    record = await call.ledger.get(request_id)
    if record is None:
        raise ToolFailure(
            f"request {request_id} is not in this server's job ledger, so its endpoint is unknown: "
            "pass endpoint_id too (the model id it was submitted to, e.g. 'fal-ai/flux/dev')",
            kind="invalid_argument",
        )
    return request_id, record.endpoint_id


async def submit(
    call: Call,
    endpoint_id: str,
    data: dict[str, Any],
    *,
    cost_estimate_usd: float | None = None,
    digest: str | None = None,
    **options: Any,
) -> Any:
    """Submit through the ledger: the intent is on disk before the request leaves, the id right after."""
    ledger = call.ledger
    intent = await ledger.record_intent(
        endpoint_id,
        data,
        call.tool,
        cost_estimate_usd=cost_estimate_usd,
        digest=digest,
        webhook_url=options.get("webhook_url"),
    )
    await call.reporter.report(f"submitting to {endpoint_id}")
    try:
        with anyio.CancelScope(shield=True):  # a submit that left must get its id recorded
            handle = await call.fal.queue.submit(endpoint_id, data, **options)
    except fe.SubmitOutcomeUnknownError as exc:
        raise await _outcome_unknown(call, endpoint_id, intent, exc) from exc
    except Exception as exc:
        await recorded(ledger.mark_intent_failed(intent, getattr(exc, "message", str(exc))), intent=intent)
        raise
    if intent is not None:  # fal has the job: never lose its id to a busy ledger
        position = getattr(handle, "queue_position", None)
        await recorded(
            ledger.attach_request_id(intent, handle.request_id, status="IN_QUEUE", queue_position=position),
            request_id=handle.request_id,
            intent=intent,
        )
    log.info("job.submitted", tool=call.tool, endpoint_id=endpoint_id, request_id=handle.request_id)
    return handle


async def recorded(write: Awaitable[Any], **ids: Any) -> None:
    """A ledger write about a job fal already has: best effort, shielded, never in the way of its result.

    A ledger locked by another process past its busy timeout is logged with the ids; the row catches up
    on the next status it records (or start-up reconciliation settles it).
    """
    with anyio.CancelScope(shield=True):
        try:
            await write
        except LedgerError as exc:
            log.error("ledger.write_failed", error=str(exc), **ids)


@asynccontextmanager
async def submit_lease(call: Call, endpoint_id: str, digest: str) -> AsyncIterator[None]:
    """Across processes sharing the ledger, one identical submit at a time (see ``Ledger.submit_lease``).

    A lease taken over from a holder that stopped renewing it leaves that holder's unanswered intent for
    this request ``UNKNOWN``: it may have reached fal, so it is never treated as "nothing to re-attach to".
    """

    async def waiting() -> None:
        await call.reporter.report("an identical call from another fal-mcp process is submitting; waiting for it")

    try:
        async with call.ledger.submit_lease(endpoint_id, digest, on_wait=waiting) as lease:
            if lease.took_over:
                abandoned = await call.ledger.abandon_intents(
                    endpoint_id,
                    digest,
                    "the fal-mcp process submitting it stopped before recording fal's answer; it may have been queued",
                )
                log.warning("ledger.lease_taken_over", endpoint_id=endpoint_id, abandoned_intents=abandoned)
            yield
    except LeaseBusyError as exc:
        raise ToolFailure(
            f"{exc}; nothing was submitted by this call (jobs_list shows that job)",
            kind="busy",
        ) from None


async def _outcome_unknown(
    call: Call, endpoint_id: str, intent: str | None, exc: fe.SubmitOutcomeUnknownError
) -> ToolFailure:
    """Record the job as UNKNOWN, keep looking for it in the background, and tell the agent exactly that."""
    from fal_mcp.server import reconcile

    ledger, background = call.ledger, call.state.background
    checking = intent is not None and background is not None
    if intent is not None and background is not None:
        until = exc.sent_at + call.state.settings.reconcile_window_seconds
        with anyio.CancelScope(shield=True):
            await ledger.mark_intent_unknown(intent, reconcile.unknown_note(exc.sent_at, until))
        background.start_soon(
            reconcile.settle, call.state, call.fal, call.owner, intent, endpoint_id, exc.input_digest, exc.sent_at
        )
    log.warning("job.submit_outcome_unknown", tool=call.tool, endpoint_id=endpoint_id, job_id=intent)
    return reconcile.outcome_unknown_failure(exc, intent, checking)


def _event_message(event: Any, outcome: WaitOutcome) -> str | None:
    from fal_mcp.fal.models import Completed, InProgress, Queued

    if isinstance(event, Queued):
        outcome.status, outcome.queue_position = "IN_QUEUE", event.position
        return "queued: next in line" if not event.position else f"queued: {event.position} ahead"
    if isinstance(event, InProgress):
        new = [entry.message for entry in event.logs if getattr(entry, "message", None)]
        outcome.logs.extend(new)
        first = outcome.status != "IN_PROGRESS"
        outcome.status, outcome.queue_position = "IN_PROGRESS", None
        if new:
            return new[-1]
        return "running" if first else None
    if isinstance(event, Completed):
        outcome.logs.extend(entry.message for entry in event.logs if getattr(entry, "message", None))
        outcome.status, outcome.completed = "COMPLETED", event
        return "completed" if not event.error else f"failed: {event.error}"
    return None


def _event_steps(event: Any, reporter: ProgressReporter) -> tuple[float, float] | None:
    """How far the job says it is: the newest log line naming its steps; all of them once completed."""
    from fal_mcp.fal.models import Completed, InProgress

    if isinstance(event, InProgress):
        for entry in reversed(event.logs):
            found = steps_in(getattr(entry, "message", None) or "")
            if found:
                return found
    if isinstance(event, Completed) and reporter.steps is not None and not event.error:
        return reporter.steps[1], reporter.steps[1]
    return None


async def wait(call: Call, endpoint_id: str, request_id: str, wait_seconds: float) -> WaitOutcome:
    """Follow fal's status stream for at most ``wait_seconds``, reporting progress; cancel on client cancel."""
    outcome = WaitOutcome()
    last_recorded = ""
    try:
        async with call.reporter.heartbeat():
            with anyio.move_on_after(wait_seconds):
                async with aclosing(call.fal.queue.wait(endpoint_id, request_id, logs=True)) as events:  # type: ignore[type-var]
                    async for event in events:
                        outcome.events += 1
                        steps = _event_steps(event, call.reporter)
                        message = _event_message(event, outcome)
                        if message:
                            await call.reporter.report(message, steps=steps)
                        if outcome.status != last_recorded and not outcome.done:
                            last_recorded = outcome.status
                            await recorded(
                                call.ledger.update_status(
                                    request_id, outcome.status, queue_position=outcome.queue_position
                                ),
                                request_id=request_id,
                            )
                        if outcome.done:
                            break
        if outcome.events == 0:  # the wait was too short for even the first event: ask once
            await _snapshot_status(call, endpoint_id, request_id, outcome)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await _on_client_cancel(call, endpoint_id, request_id)
        raise
    except fe.FalError as exc:
        if exc.request_id is None:
            exc.request_id = request_id
        raise
    return outcome


async def _snapshot_status(call: Call, endpoint_id: str, request_id: str, outcome: WaitOutcome) -> None:
    from fal_mcp.fal.models import Completed

    status = await call.fal.queue.status(endpoint_id, request_id, logs=True)
    logs = [entry.message for entry in status.logs or []]
    if status.status == "COMPLETED":
        outcome.completed = Completed(
            request_id=request_id, logs=(), metrics=status.metrics, error=status.error, error_type=status.error_type
        )
    outcome.status, outcome.queue_position, outcome.logs = status.status, status.queue_position, logs


async def record_run(
    call: Call,
    endpoint_id: str,
    data: dict[str, Any],
    run: Callable[[], Awaitable[RunResult]],
    cost_estimate_usd: float | None = None,
) -> RunResult:
    """A direct run is a paid job too: record it so jobs_list shows it (no resume: fal can't resume runs)."""
    from fal_mcp.ledger import extract_result_urls

    ledger = call.ledger
    intent = await ledger.record_intent(endpoint_id, data, call.tool, cost_estimate_usd=cost_estimate_usd)
    try:
        result = await run()
    except BaseException as exc:
        from fal_mcp.fal.queue import may_have_reached_fal

        maybe_ran = isinstance(exc, fe.FalError) and may_have_reached_fal(exc)
        reason = getattr(exc, "message", None) or type(exc).__name__
        mark = ledger.mark_intent_unknown if maybe_ran else ledger.mark_intent_failed
        await recorded(mark(intent, reason), intent=intent)
        if maybe_ran:
            raise ToolFailure(
                f"{endpoint_id} was sent but its answer was lost ({reason}): fal may have run it, and charged for "
                "it. It was not sent again. A direct run cannot be looked up or resumed, so check fal's dashboard "
                "(request history) before running the same input again; for slow models use fal_subscribe, "
                "whose jobs survive a lost answer.",
                kind="submit_outcome_unknown",
                endpoint_id=endpoint_id,
                job_id=intent,
                next_step="Check fal's request history before running the same input again.",
            ) from exc
        raise
    if intent is not None and result.request_id:
        await recorded(ledger.attach_request_id(intent, result.request_id, status="COMPLETED"), intent=intent)
        await recorded(
            ledger.update_status(result.request_id, "COMPLETED", result_urls=extract_result_urls(result.data)),
            request_id=result.request_id,
        )
    return result


@asynccontextmanager
async def recorded_direct(
    call: Call, endpoint_id: str, data: Any, cost_estimate_usd: float | None
) -> AsyncIterator[None]:
    """A stream or realtime call fal gives no request id for: on the ledger (jobs_list, budgets) all the same."""
    ledger = call.ledger
    intent = await ledger.record_intent(endpoint_id, data, call.tool, cost_estimate_usd=cost_estimate_usd)
    try:
        yield
    except BaseException as exc:
        reason = getattr(exc, "message", None) or type(exc).__name__
        await recorded(ledger.finish_direct(intent, failed=reason), intent=intent)
        raise
    if intent is not None:
        await recorded(ledger.finish_direct(intent), intent=intent)


async def _on_client_cancel(call: Call, endpoint_id: str, request_id: str) -> None:
    keep = call.state.settings.on_client_cancel == "keep"
    log.info("job.client_cancelled", request_id=request_id, endpoint_id=endpoint_id, keep_running=keep)
    if keep:
        return
    try:
        with anyio.fail_after(10):
            await call.fal.queue.cancel(endpoint_id, request_id)
        await call.ledger.update_status(request_id, "CANCELLED", error="cancelled because the client cancelled")
    except Exception as exc:  # best effort: the ledger still knows the job
        log.warning("job.cancel_failed", request_id=request_id, error=getattr(exc, "message", str(exc)))


async def fetch_result(call: Call, endpoint_id: str, request_id: str) -> dict[str, Any]:
    """The finished job's output; a failed job raises its error and is recorded as FAILED."""
    from fal_mcp.ledger import extract_result_urls

    try:
        output = await call.fal.queue.result(endpoint_id, request_id)
    except fe.FalAPIError as exc:
        if exc.request_id is None:
            exc.request_id = request_id
        if not isinstance(exc, (fe.NotFoundError, fe.RateLimitError)):
            status = "CANCELLED" if isinstance(exc, fe.RequestCancelledError) else "FAILED"
            await recorded(
                call.ledger.update_status(request_id, status, error=exc.message, error_type=exc.error_type),
                request_id=request_id,
            )
        raise
    await recorded(
        call.ledger.update_status(request_id, "COMPLETED", result_urls=extract_result_urls(output)),
        request_id=request_id,
    )
    return output


def next_step_for(request_id: str) -> str:
    return (
        f"The job is still running on fal and nothing is lost. Call queue_result(request_id='{request_id}') "
        "to keep waiting (or queue_status to check, queue_cancel to stop it)."
    )
