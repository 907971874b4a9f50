"""The paid job, end to end, with no MCP in it: where a paid request is sent, recorded and followed.

A :class:`JobService` is one caller's jobs: their fal client, their view of the ledger, the settings
and a progress sink. A paid call goes through it in two steps:

1. :meth:`JobService.plan` — every check that costs nothing: values, the model's schema, local files,
   the cost estimate. A bad input is refused here, before anything else happens.
2. a paying method with that plan — :meth:`JobService.reuse_or_submit` / :meth:`JobService.submit`
   (queue), :meth:`JobService.run`, :meth:`JobService.stream`, :meth:`JobService.realtime` — which first
   clears the spend (:meth:`JobService.clear_to_pay`: ``fal_mcp.spend`` decides against the limits and
   budgets; when it says "ask", the caller's ``approve`` step asks the user — the MCP face does that with
   a form or a one-time token), then uploads the local files, then records and sends. These are the only
   places fal_mcp sends a paid request.

The rules kept here:

* the intent is on the ledger before the request leaves, fal's request id right after;
* identical calls pay once: one lock per (owner, endpoint, input) in this process, a lease in the
  ledger across processes, and re-attaching to an identical running or recent job;
* a submit whose answer was lost is never sent again: it is ``UNKNOWN`` and settled from fal's history
  (:meth:`JobService.settle`; at start-up, :meth:`JobService.reconcile` settles earlier processes' submits);
* a waiting call the client cancels cancels the fal job too (unless configured to keep it).

The MCP tools (``fal_mcp.server.tools``) only parse arguments, call this and shape the result.
"""

from __future__ import annotations

import json
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from fal_mcp.digest import input_digest
from fal_mcp.failures import NOTHING_PAID, ToolFailure
from fal_mcp.fal import errors as fe
from fal_mcp.fal.endpoint import EndpointId, check_request_id
from fal_mcp.log import get_logger
from fal_mcp.spend import Decision, Quote, Spent, Verdict, decide, format_usd, price_drivers

if TYPE_CHECKING:
    from pathlib import Path

    from anyio.abc import TaskGroup

    from fal_mcp.config import Settings
    from fal_mcp.fal.client import FalClient
    from fal_mcp.fal.models import RunResult
    from fal_mcp.inputs import PreparedInput
    from fal_mcp.ledger import OwnedLedger

log = get_logger(__name__)


class Progress(Protocol):
    """Where a job's progress goes (the MCP face sends it as progress notifications)."""

    @property
    def steps(self) -> tuple[float, float] | None: ...

    async def report(self, message: str, *, steps: tuple[float, float] | None = None) -> None: ...

    def heartbeat(self) -> AbstractAsyncContextManager[None]: ...


# Asks the user to approve a call fal_mcp.spend says needs approval; returns when approved, raises the
# refusal otherwise (declined, or a one-time token to call again with). The MCP face provides it.
Approve = Callable[["PaidPlan", "Decision"], Awaitable[None]]
DAY_SECONDS = 86400.0


@dataclass
class PaidPlan:
    """A paid call's checked inputs and their quote; ``spent`` is what the budgets knew before it."""

    inputs: list[PreparedInput]
    quote: Quote
    spent: Spent | None = None

    @property
    def endpoint_id(self) -> str:
        return self.quote.endpoint_id

    @property
    def budget_after(self) -> Spent | None:
        if self.spent is None:
            return None
        usd = self.quote.usd or 0.0
        return Spent(self.spent.today_usd + usd, self.spent.session_usd + usd)


def quote_of(endpoint_id: str, inputs: list[PreparedInput]) -> Quote:
    """One quote for a call: a single input's, or the sum over a realtime call's inputs (unknown if any is)."""
    if len(inputs) == 1:
        only = inputs[0]
        return Quote(endpoint_id, only.digest, only.cost_estimate_usd, only.cost_basis, price_drivers(only.data))
    costs = [p.cost_estimate_usd for p in inputs]
    unknown = next((p.cost_basis for p in inputs if p.cost_estimate_usd is None), None)
    usd = None if unknown is not None else round(sum(c or 0.0 for c in costs), 6)
    basis = unknown or f"{len(inputs)} inputs"
    digest = input_digest([p.digest for p in inputs])
    return Quote(endpoint_id, digest, usd, basis, {"inputs": len(inputs)})


def describe(quote: Quote) -> str:
    """``endpoint (about $0.04; per image; num_images=1)`` — a quote as people read it."""
    cost = "cost unknown" if quote.usd is None else f"about {format_usd(quote.usd)}"
    drivers = ", ".join(f"{k}={v}" for k, v in quote.drivers.items())
    return f"{quote.endpoint_id} ({cost}; {quote.basis}{'; ' + drivers if drivers else ''})"


class Silent:
    """Progress for work nobody watches (start-up reconciliation)."""

    steps: tuple[float, float] | None = None

    async def report(self, message: str, *, steps: tuple[float, float] | None = None) -> None:
        return None

    @asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        yield


# Settling a lost submit: fal has no idempotency key, and its request history lists a request only once
# it has finished (sorted by end time), some time after that. So a lost answer cannot be settled on the
# spot: the job is ``UNKNOWN``, the agent is told so, and the service keeps looking — first after a few
# seconds, then less and less often, for ``Settings.reconcile_window_seconds``.
MAX_LOOKUP_INTERVAL = 60.0  # seconds between history lookups, once they have backed off
HISTORY_WINDOW = 60.0  # look for the submit from this long before it was recorded (clock skew)


class SubmitLocks:
    """One lock per (owner, endpoint, input) in this process: identical calls racing each other pay once."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[str, ...], anyio.Lock] = weakref.WeakValueDictionary()

    def lock(self, *key: str) -> anyio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        return lock


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


# "step 7/28", "7 / 28", "Denoising step 7 of 28", tqdm's "| 7/28 [00:01<00:03]"; not dates or paths.
_STEPS = re.compile(r"(?<![\w./:-])(\d{1,6})\s*(?:/|\bof\b)\s*(\d{1,6})(?![\w./:-])", re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d+)?)\s?%")


def steps_in(text: str) -> tuple[float, float] | None:
    """(done, total) when a log line says how far the job is, else ``None``."""
    for match in _STEPS.finditer(text):
        done, total = int(match.group(1)), int(match.group(2))
        if total >= 2 and 0 <= done <= total:
            return float(done), float(total)
    percent = _PERCENT.search(text)
    if percent and 0 <= float(percent.group(1)) <= 100:
        return float(percent.group(1)), 100.0
    return None


@dataclass
class Streamed:
    """What a streaming run sent: its last event (the final output) and how many there were."""

    last: Any = None
    events: int = 0


def _partial_text(event: Any) -> str:
    """A short, readable rendering of one streamed event for a progress message."""
    if isinstance(event, dict):
        for key in ("output", "text", "delta", "partial_output"):
            if isinstance(event.get(key), str):
                text = event[key].strip().replace("\n", " ")
                return text[-200:] if len(text) > 200 else text
    rendered = json.dumps(event, ensure_ascii=False, default=str)
    return rendered[:200]


def _stream_steps(event: Any) -> tuple[float, float] | None:
    """(done, total) when a streamed event says how far it is: ``step``/``total_steps``-style fields or a
    ``progress`` fraction. An LLM's partial text says nothing of its length, so it gets no total."""
    if not isinstance(event, dict):
        return None
    number = (int, float)
    done = next((event[k] for k in ("step", "current_step", "completed") if isinstance(event.get(k), number)), None)
    total = next((event[k] for k in ("total_steps", "steps", "total") if isinstance(event.get(k), number)), None)
    if done is not None and total and 0 <= done <= total:
        return float(done), float(total)
    fraction = event.get("progress")
    if isinstance(fraction, number) and not isinstance(fraction, bool) and 0 <= fraction <= 1:
        return float(fraction) * 100, 100.0
    return None


@contextmanager
def _no_such_mode(endpoint: str, mode: str) -> Iterator[None]:
    """fal's 404 here usually means the model exists but has no ``mode`` endpoint: say so, and what to use."""
    try:
        yield
    except fe.NotFoundError as exc:
        raise ToolFailure(
            f"{endpoint} has no {mode} endpoint, or no such model exists: {exc.message}",
            kind="not_found",
            request_id=exc.request_id,
            next_step="Run this model with fal_subscribe (or fal_run); model_schema shows whether it exists.",
        ) from exc


def parse_endpoint(endpoint_id: str) -> str:
    return str(EndpointId.parse(endpoint_id))


def next_step_for(request_id: str) -> str:
    return (
        f"The job is still running on fal and nothing is lost. Call queue_result(request_id='{request_id}') "
        "to keep waiting (or queue_status to check, queue_cancel to stop it)."
    )


async def recorded(write: Awaitable[Any], **ids: Any) -> None:
    """A ledger write about a job fal already has: best effort, shielded, never in the way of its result.

    A ledger locked by another process past its busy timeout is logged with the ids; the row catches up
    on the next status it records (or start-up reconciliation settles it).
    """
    from fal_mcp.ledger import LedgerError

    with anyio.CancelScope(shield=True):
        try:
            await write
        except LedgerError as exc:
            log.error("ledger.write_failed", error=str(exc), **ids)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def unknown_note(sent_at: float, until: float, *, restarted: bool = False) -> str:
    """What ``jobs_list`` says about a job whose outcome is unknown (stays true whatever happens next)."""
    what = (
        f"an earlier fal-mcp process recorded this submit at {_when(sent_at)} and stopped before fal's answer was saved"
        if restarted
        else f"the submit sent at {_when(sent_at)} lost its answer"
    )
    return (
        f"outcome unknown: {what}, so fal may or may not have queued "
        "it; it was not sent again (that could charge twice). This server checks fal's request history "
        f"(which lists a request once it has finished) until {_when(until)}; if fal lists it, this row gets its "
        "request_id and outcome."
    )


def outcome_unknown_failure(exc: fe.SubmitOutcomeUnknownError, job_id: str | None, checking: bool) -> ToolFailure:
    """The error the agent gets: exactly what happened, what was (not) done, and what to check."""
    if checking:
        follow_up = (
            "This server keeps checking fal's request history in the background (fal lists a request only "
            "after it has finished). Call jobs_list in a minute or two: this job"
            + (f" ({job_id})" if job_id else "")
            + " shows its request_id and outcome (COMPLETED, FAILED) as soon as fal lists it, or stays UNKNOWN. "
        )
    else:
        follow_up = "Look the request up in fal's dashboard (request history for this model) before submitting again. "
    return ToolFailure(
        f"{exc.message} {follow_up}Do not submit the same input again until then: if fal did queue it, a second "
        "submit is charged a second time (fal_subscribe refuses an identical input meanwhile unless fresh=true).",
        kind="submit_outcome_unknown",
        endpoint_id=exc.endpoint_id,
        job_id=job_id,
        input_digest=exc.input_digest,
        next_step="Call jobs_list later to see this job's outcome; do not resubmit the same input blindly.",
    )


@dataclass
class JobService:
    """One caller's paid jobs: submit (once), wait, result, status, cancel — recorded on their ledger."""

    fal: FalClient
    ledger: OwnedLedger
    settings: Settings
    progress: Progress
    tool: str
    locks: SubmitLocks
    background: TaskGroup | None = None  # where lost submits are looked up later (the server's lifespan)
    session_started_at: float = 0.0  # what FAL_MCP_BUDGET_USD_PER_SESSION counts from

    # -- which job ------------------------------------------------------------------------------
    async def resolve_endpoint(self, request_id: str, endpoint_id: str | None) -> tuple[str, str]:
        """(request_id, endpoint_id): the endpoint may be omitted when the job is in this caller's ledger."""
        request_id = check_request_id(request_id)
        if endpoint_id:
            return request_id, parse_endpoint(endpoint_id)
        record = await self.ledger.get(request_id)
        if record is None:
            raise ToolFailure(
                f"request {request_id} is not in this server's job ledger, so its endpoint is unknown: "
                "pass endpoint_id too (the model id it was submitted to, e.g. 'fal-ai/flux/dev')",
                kind="invalid_argument",
            )
        return request_id, record.endpoint_id

    # -- before paying: checks that cost nothing, then the spend -------------------------------
    async def plan(self, endpoint_id: str, data: list[dict[str, Any]], *, roots: tuple[Path, ...]) -> PaidPlan:
        """Every check that needs no money, for each input: values, schema, local files, cost."""
        from fal_mcp.inputs import check_input, plan_input  # on first paid call: start-up stays light

        inputs = [await plan_input(self.fal, self.settings, endpoint_id, item, roots=roots) for item in data]
        for prepared in inputs:
            await check_input(self.fal, self.settings, prepared)
        return PaidPlan(inputs, quote_of(endpoint_id, inputs))

    async def spent(self) -> Spent | None:
        """What the budgets count as spent (from the ledger); ``None`` when no budget is set.

        With a budget set and no ledger to read, nothing can be checked, so the call is refused.
        """
        if not self.settings.spend_limits.budgeted:
            return None
        if not self.ledger.available:
            raise ToolFailure(
                "refused: a spend budget is set but the job ledger that records spending is unavailable "
                f"({self.ledger.error}), so the budget cannot be checked. {NOTHING_PAID}",
                kind="budget",
                next_step="Call again in a minute (the ledger is retried); the user can fix or unset the ledger path.",
            )
        today = await self.ledger.spent_since(time.time() - DAY_SECONDS)
        session = await self.ledger.spent_since(self.session_started_at)
        return Spent(round(today, 6), round(session, 6))

    async def decision(self, plan: PaidPlan) -> Decision | None:
        """``fal_mcp.spend``'s verdict on this plan against the limits and budgets (``None``: none are set)."""
        limits = self.settings.spend_limits
        if not limits.any:
            return None
        plan.spent = await self.spent()
        return decide(limits, plan.quote, plan.spent or Spent())

    async def clear_to_pay(self, plan: PaidPlan, approve: Approve) -> list[dict[str, Any]]:
        """The last step before a paid request: refuse over a limit or budget, ask ``approve`` when the
        decision is "ask", then upload the local files; the inputs to send."""
        from fal_mcp.inputs import upload_local_files

        decision = await self.decision(plan)
        if decision is not None and decision.verdict is Verdict.REFUSE:
            limits = self.settings.spend_limits
            raise ToolFailure(
                f"refused: {decision.reason}. {NOTHING_PAID}",
                kind=decision.kind,
                endpoint_id=plan.endpoint_id,
                cost_estimate_usd=plan.quote.usd,
                limit_usd=limits.max_cost_usd if decision.kind == "cost_limit" else None,
            )
        if decision is not None and decision.verdict is Verdict.ASK:
            await approve(plan, decision)
        for prepared in plan.inputs:
            await upload_local_files(self.fal, prepared)
        return [prepared.data for prepared in plan.inputs]

    # -- paying ---------------------------------------------------------------------------------
    async def reuse_or_submit(
        self, plan: PaidPlan, *, approve: Approve, fresh: bool, **options: Any
    ) -> tuple[str, bool]:
        """(request_id, reattached): an identical running or recent job of this caller, else a new submission.

        Identical calls racing each other queue on one lock, and on a lease in the ledger when they come from
        different processes sharing it, so the second re-attaches to the first's job (nothing to approve:
        no new charge). A new submission is cleared to pay first (:meth:`clear_to_pay`).
        """
        endpoint_id, digest = plan.endpoint_id, plan.quote.digest
        async with self.locks.lock(self.ledger.owner, endpoint_id, digest), self.submit_lease(endpoint_id, digest):
            if not fresh:
                window = self.settings.reuse_window_seconds
                earlier = await self.ledger.find_reusable(endpoint_id, digest, window)
                if earlier is not None and earlier.request_id:
                    await self.progress.report(f"re-attaching to identical job {earlier.request_id} (no new charge)")
                    return earlier.request_id, True
                await self._refuse_while_unknown(endpoint_id, digest)
            handle = await self.submit(plan, approve=approve, **options)
            return handle.request_id, False

    async def _refuse_while_unknown(self, endpoint_id: str, digest: str) -> None:
        """An identical submit whose outcome is still unknown may have been queued: a second one could pay twice."""
        window = self.settings.reconcile_window_seconds
        for job in await self.ledger.list(status="UNKNOWN", endpoint_id=endpoint_id, limit=50):
            if job.input_digest == digest and job.request_id is None and job.created_at >= time.time() - window:
                raise ToolFailure(
                    f"refused: an identical call to {endpoint_id} at {job.created} lost fal's answer and its outcome "
                    "is still unknown (fal may have queued and charged it). Nothing was submitted now. Call jobs_list "
                    f"to see whether job {job.job_id} has turned up; pass fresh=true only to pay for a second run "
                    "anyway.",
                    kind="submit_outcome_unknown",
                    endpoint_id=endpoint_id,
                    job_id=job.job_id,
                    next_step="Call jobs_list to see that job's outcome; fresh=true pays for a new run regardless.",
                )

    @asynccontextmanager
    async def submit_lease(self, endpoint_id: str, digest: str) -> AsyncIterator[None]:
        """Across processes sharing the ledger, one identical submit at a time (see ``Ledger.submit_lease``).

        A lease taken over from a holder that stopped renewing it leaves that holder's unanswered intent for
        this request ``UNKNOWN``: it may have reached fal, so it is never treated as "nothing to re-attach to".
        """

        from fal_mcp.ledger import LeaseBusyError

        async def waiting() -> None:
            await self.progress.report("an identical call from another fal-mcp process is submitting; waiting for it")

        try:
            async with self.ledger.submit_lease(endpoint_id, digest, on_wait=waiting) as lease:
                if lease.took_over:
                    abandoned = await self.ledger.abandon_intents(
                        endpoint_id,
                        digest,
                        "the fal-mcp process submitting it stopped before recording fal's answer; it may have been "
                        "queued",
                    )
                    log.warning("ledger.lease_taken_over", endpoint_id=endpoint_id, abandoned_intents=abandoned)
                yield
        except LeaseBusyError as exc:
            raise ToolFailure(
                f"{exc}; nothing was submitted by this call (jobs_list shows that job)",
                kind="busy",
            ) from None

    async def submit(self, plan: PaidPlan, *, approve: Approve, **options: Any) -> Any:
        """Clear to pay, then submit through the ledger: the intent is on disk before the request leaves, the
        id right after."""
        [data] = await self.clear_to_pay(plan, approve)
        endpoint_id, ledger = plan.endpoint_id, self.ledger
        intent = await ledger.record_intent(
            endpoint_id,
            data,
            self.tool,
            cost_estimate_usd=plan.quote.usd,
            digest=plan.quote.digest,
            webhook_url=options.get("webhook_url"),
        )
        await self.progress.report(f"submitting to {endpoint_id}")
        try:
            with anyio.CancelScope(shield=True):  # a submit that left must get its id recorded
                handle = await self.fal.queue.submit(endpoint_id, data, **options)
        except fe.SubmitOutcomeUnknownError as exc:
            raise await self._outcome_unknown(endpoint_id, intent, exc) from exc
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
        log.info("job.submitted", tool=self.tool, endpoint_id=endpoint_id, request_id=handle.request_id)
        return handle

    async def _outcome_unknown(
        self, endpoint_id: str, intent: str | None, exc: fe.SubmitOutcomeUnknownError
    ) -> ToolFailure:
        """Record the job as UNKNOWN, keep looking for it in the background, and tell the agent exactly that."""
        checking = intent is not None and self.background is not None
        if intent is not None and self.background is not None:
            until = exc.sent_at + self.settings.reconcile_window_seconds
            with anyio.CancelScope(shield=True):
                await self.ledger.mark_intent_unknown(intent, unknown_note(exc.sent_at, until))
            self.background.start_soon(self.settle, intent, endpoint_id, exc.input_digest, exc.sent_at)
        log.warning("job.submit_outcome_unknown", tool=self.tool, endpoint_id=endpoint_id, job_id=intent)
        return outcome_unknown_failure(exc, intent, checking)

    async def run(self, plan: PaidPlan, *, approve: Approve) -> RunResult:
        """A direct run is a paid job too: cleared to pay, then recorded so jobs_list shows it (no resume:
        fal can't resume runs)."""
        [data] = await self.clear_to_pay(plan, approve)
        await self.progress.report(f"running {plan.endpoint_id}")
        async with self.progress.heartbeat():
            return await self._run(plan.endpoint_id, data, plan.quote.usd)

    async def _run(self, endpoint_id: str, data: dict[str, Any], cost_estimate_usd: float | None) -> RunResult:
        from fal_mcp.fal.queue import may_have_reached_fal
        from fal_mcp.ledger import extract_result_urls

        ledger = self.ledger
        intent = await ledger.record_intent(endpoint_id, data, self.tool, cost_estimate_usd=cost_estimate_usd)
        try:
            result = await self.fal.runs.run(endpoint_id, data, **self.settings.privacy_options())
        except BaseException as exc:
            maybe_ran = isinstance(exc, fe.FalError) and may_have_reached_fal(exc)
            reason = getattr(exc, "message", None) or type(exc).__name__
            mark = ledger.mark_intent_unknown if maybe_ran else ledger.mark_intent_failed
            await recorded(mark(intent, reason), intent=intent)
            if maybe_ran:
                raise ToolFailure(
                    f"{endpoint_id} was sent but its answer was lost ({reason}): fal may have run it, and charged "
                    "for it. It was not sent again. A direct run cannot be looked up or resumed, so check fal's "
                    "dashboard (request history) before running the same input again; for slow models use "
                    "fal_subscribe, whose jobs survive a lost answer.",
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

    async def stream(self, plan: PaidPlan, *, approve: Approve) -> Streamed:
        """Run a streaming model: each partial output goes out as progress; returns the last one."""
        streamed, endpoint_id = Streamed(), plan.endpoint_id
        async with self._direct(plan, approve) as [data], self.progress.heartbeat():
            with _no_such_mode(endpoint_id, "streaming"):
                async for event in self.fal.runs.stream(endpoint_id, data, **self.settings.privacy_options()):
                    streamed.events += 1
                    streamed.last = event
                    await self.progress.report(_partial_text(event), steps=_stream_steps(event))
            if streamed.events == 0:
                raise ToolFailure(f"{endpoint_id} closed its stream without any output", kind="fal_error")
        return streamed

    async def realtime(self, plan: PaidPlan, *, approve: Approve) -> list[dict[str, Any]]:
        """Send every input over one realtime WebSocket connection; outputs in order, each reported. Limits,
        budgets and approval hold for the whole call: the sum over its inputs, before the connection opens."""
        endpoint_id = plan.endpoint_id
        async with self._direct(plan, approve) as inputs:

            async def received(done: int, _output: dict[str, Any]) -> None:
                await self.progress.report(f"output {done}/{len(inputs)}", steps=(done, len(inputs)))

            await self.progress.report(f"connecting to {endpoint_id} (realtime)")
            async with self.progress.heartbeat():
                with _no_such_mode(endpoint_id, "realtime"):
                    return await self.fal.realtime.run_many(endpoint_id, inputs, on_output=received)

    @asynccontextmanager
    async def _direct(self, plan: PaidPlan, approve: Approve) -> AsyncIterator[list[dict[str, Any]]]:
        """A stream or realtime call fal gives no request id for: cleared to pay, then on the ledger (jobs_list,
        budgets) all the same. Yields the inputs to send."""
        inputs = await self.clear_to_pay(plan, approve)
        ledger = self.ledger
        data: Any = inputs[0] if len(inputs) == 1 else inputs
        intent = await ledger.record_intent(plan.endpoint_id, data, self.tool, cost_estimate_usd=plan.quote.usd)
        try:
            yield inputs
        except BaseException as exc:
            reason = getattr(exc, "message", None) or type(exc).__name__
            await recorded(ledger.finish_direct(intent, failed=reason), intent=intent)
            raise
        await recorded(ledger.finish_direct(intent), intent=intent)

    # -- following a job ------------------------------------------------------------------------
    async def wait(self, endpoint_id: str, request_id: str, wait_seconds: float) -> WaitOutcome:
        """Follow fal's status stream for at most ``wait_seconds``, reporting progress; cancel on client cancel."""
        outcome = WaitOutcome()
        last_recorded = ""
        try:
            async with self.progress.heartbeat():
                with anyio.move_on_after(wait_seconds):
                    async with aclosing(self.fal.queue.wait(endpoint_id, request_id, logs=True)) as events:  # type: ignore[type-var]
                        async for event in events:
                            outcome.events += 1
                            steps = _event_steps(event, self.progress)
                            message = _event_message(event, outcome)
                            if message:
                                await self.progress.report(message, steps=steps)
                            if outcome.status != last_recorded and not outcome.done:
                                last_recorded = outcome.status
                                await recorded(
                                    self.ledger.update_status(
                                        request_id, outcome.status, queue_position=outcome.queue_position
                                    ),
                                    request_id=request_id,
                                )
                            if outcome.done:
                                break
            if outcome.events == 0:  # the wait was too short for even the first event: ask once
                await self._snapshot_status(endpoint_id, request_id, outcome)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._on_client_cancel(endpoint_id, request_id)
            raise
        except fe.FalError as exc:
            if exc.request_id is None:
                exc.request_id = request_id
            raise
        return outcome

    async def _snapshot_status(self, endpoint_id: str, request_id: str, outcome: WaitOutcome) -> None:
        from fal_mcp.fal.models import Completed

        status = await self.fal.queue.status(endpoint_id, request_id, logs=True)
        logs = [entry.message for entry in status.logs or []]
        if status.status == "COMPLETED":
            outcome.completed = Completed(
                request_id=request_id, logs=(), metrics=status.metrics, error=status.error, error_type=status.error_type
            )
        outcome.status, outcome.queue_position, outcome.logs = status.status, status.queue_position, logs

    async def _on_client_cancel(self, endpoint_id: str, request_id: str) -> None:
        keep = self.settings.on_client_cancel == "keep"
        log.info("job.client_cancelled", request_id=request_id, endpoint_id=endpoint_id, keep_running=keep)
        if keep:
            return
        try:
            with anyio.fail_after(10):
                await self.fal.queue.cancel(endpoint_id, request_id)
            await self.ledger.update_status(request_id, "CANCELLED", error="cancelled because the client cancelled")
        except Exception as exc:  # best effort: the ledger still knows the job
            log.warning("job.cancel_failed", request_id=request_id, error=getattr(exc, "message", str(exc)))

    async def result(self, endpoint_id: str, request_id: str) -> dict[str, Any]:
        """The finished job's output; a failed job raises its error and is recorded as FAILED."""
        from fal_mcp.ledger import extract_result_urls

        try:
            output = await self.fal.queue.result(endpoint_id, request_id)
        except fe.FalAPIError as exc:
            if exc.request_id is None:
                exc.request_id = request_id
            if not isinstance(exc, (fe.NotFoundError, fe.RateLimitError)):
                status = "CANCELLED" if isinstance(exc, fe.RequestCancelledError) else "FAILED"
                await recorded(
                    self.ledger.update_status(request_id, status, error=exc.message, error_type=exc.error_type),
                    request_id=request_id,
                )
            raise
        await recorded(
            self.ledger.update_status(request_id, "COMPLETED", result_urls=extract_result_urls(output)),
            request_id=request_id,
        )
        return output

    async def status(self, endpoint_id: str, request_id: str, *, logs: bool) -> Any:
        """fal's status of the job now, recorded: unfinished with its queue position; a job that ended
        cancelled or failed (say, cancelled from another client or fal's dashboard) as CANCELLED / FAILED.
        A success is recorded with its result (queue_result), which has the output's files."""
        status = await self.fal.queue.status(endpoint_id, request_id, logs=logs)
        if not status.completed:
            update = self.ledger.update_status(request_id, status.status, queue_position=status.queue_position)
        elif status.cancelled or status.failed:
            ended = "CANCELLED" if status.cancelled else "FAILED"
            update = self.ledger.update_status(
                request_id, ended, error=status.error or status.error_type, error_type=status.error_type
            )
        else:
            return status
        await recorded(update, request_id=request_id)
        return status

    async def cancel(self, endpoint_id: str, request_id: str, *, why: str) -> Any:
        """Ask fal to cancel; ``CANCELLATION_REQUESTED`` is recorded as CANCELLED, with ``why``."""
        outcome = await self.fal.queue.cancel(endpoint_id, request_id)
        value = getattr(outcome, "value", outcome)
        if value == "CANCELLATION_REQUESTED":
            await recorded(self.ledger.update_status(request_id, "CANCELLED", error=why), request_id=request_id)
        return value

    # -- retention --------------------------------------------------------------------------------
    async def prune(self) -> int:
        """Retention for this caller's finished jobs (``FAL_MCP_LEDGER_KEEP_DAYS`` / ``_KEEP_JOBS``); unfinished
        ones stay whatever their age, since each may still be settled and stand for a charge. Best effort:
        a busy ledger is pruned next time."""
        from fal_mcp.ledger import LedgerError

        try:
            return await self.ledger.prune(self.settings.ledger_keep_days, self.settings.ledger_keep_jobs)
        except LedgerError as exc:
            log.warning("ledger.prune_failed", error=str(exc))
            return 0

    # -- lost answers -----------------------------------------------------------------------------
    async def reconcile(self, started_at: float) -> int:
        """Look each unresolved intent of an earlier process (before ``started_at``) up in fal's request
        history: attach its id, or mark it unknown and keep looking in the background (fal lists a request
        only once it has finished, so absence proves nothing). This process's own intents are in flight.
        """
        ledger = self.ledger
        settled = 0
        intents = [i for i in await ledger.unresolved_intents() if i.created_at < started_at]
        for intent in intents:
            digest = intent.body_digest or intent.input_digest
            known = [r.request_id for r in await ledger.list(endpoint_id=intent.endpoint_id, limit=500)]
            try:
                handle = await self.fal.queue.find_submission(
                    intent.endpoint_id, digest=digest, since=intent.created_at - 60, exclude=[r for r in known if r]
                )
            except fe.SubmitOutcomeUnknownError as exc:
                await ledger.mark_intent_unknown(intent.job_id, exc.message)
                continue
            except fe.FalError as exc:  # history unreachable now: try again on the next start
                log.warning("reconcile.unavailable", job_id=intent.job_id, error=exc.message)
                continue
            settled += 1
            if handle is not None:
                await ledger.attach_request_id(intent.job_id, handle.request_id)
                log.info("reconcile.found", job_id=intent.job_id, request_id=handle.request_id)
                await self._record_outcome(intent.endpoint_id, handle.request_id)
                continue
            until = intent.created_at + self.settings.reconcile_window_seconds
            note = unknown_note(intent.created_at, until, restarted=True)
            await ledger.mark_intent_unknown(intent.job_id, note)
        await self._resume_settling(started_at)  # these, and an earlier process's UNKNOWN jobs
        return settled

    async def _resume_settling(self, started_at: float) -> None:
        """Jobs of earlier processes whose outcome is unknown, still inside their window: keep looking for them."""
        if self.background is None:
            return
        since = time.time() - self.settings.reconcile_window_seconds
        for job in await self.ledger.list(status="UNKNOWN", limit=200):
            if job.request_id is None and job.created_at < started_at and job.created_at >= since:
                digest = job.body_digest or job.input_digest
                self.background.start_soon(self.settle, job.job_id, job.endpoint_id, digest, job.created_at)

    async def settle(self, job_id: str, endpoint_id: str, digest: str, sent_at: float) -> bool:
        """Look the lost submit up in fal's history until it shows up or the window ends; True when found."""
        delay = self.settings.reconcile_first_delay_seconds
        deadline = sent_at + self.settings.reconcile_window_seconds
        while True:
            await anyio.sleep(delay)
            if not self.ledger.available:
                return False
            try:
                found = await self._look_up(job_id, endpoint_id, digest, sent_at)
            except fe.SubmitOutcomeUnknownError as exc:  # history without payloads: it can never tell
                log.warning("reconcile.undecidable", job_id=job_id, error=exc.message)
                return False
            except fe.FalError as exc:
                log.info("reconcile.history_unavailable", job_id=job_id, error=exc.message)
                found = False
            if found:
                return True
            if time.time() + delay > deadline:
                log.warning("reconcile.gave_up", job_id=job_id, endpoint_id=endpoint_id)
                return False
            delay = min(delay * 2, MAX_LOOKUP_INTERVAL)

    async def _look_up(self, job_id: str, endpoint_id: str, digest: str, sent_at: float) -> bool:
        known = [r.request_id for r in await self.ledger.list(endpoint_id=endpoint_id, limit=500) if r.request_id]
        handle = await self.fal.queue.find_submission(
            endpoint_id, digest=digest, since=sent_at - HISTORY_WINDOW, exclude=known
        )
        if handle is None:
            return False
        await self.ledger.attach_request_id(job_id, handle.request_id, status="IN_QUEUE")
        log.info("reconcile.found", job_id=job_id, request_id=handle.request_id)
        await self._record_outcome(endpoint_id, handle.request_id)
        return True

    async def _record_outcome(self, endpoint_id: str, request_id: str) -> None:
        """Write what fal now says about a found request into the ledger (best effort: queue_result can redo it)."""
        from fal_mcp.ledger import extract_result_urls

        ledger = self.ledger
        try:
            status = await self.fal.queue.status(endpoint_id, request_id)
            if status.status != "COMPLETED":
                await ledger.update_status(request_id, status.status, queue_position=status.queue_position)
                return
            output = await self.fal.queue.result(endpoint_id, request_id)
        except fe.FalAPIError as exc:
            if isinstance(exc, fe.NotFoundError | fe.RateLimitError | fe.ResultNotReadyError):
                return  # expired, busy or not done after all: queue_result settles it later
            await ledger.update_status(request_id, "FAILED", error=exc.message, error_type=exc.error_type)
            return
        except fe.FalError as exc:
            log.info("reconcile.outcome_unavailable", request_id=request_id, error=exc.message)
            return
        await ledger.update_status(request_id, "COMPLETED", result_urls=extract_result_urls(output))


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


def _event_steps(event: Any, progress: Progress) -> tuple[float, float] | None:
    """How far the job says it is: the newest log line naming its steps; all of them once completed."""
    from fal_mcp.fal.models import Completed, InProgress

    if isinstance(event, InProgress):
        for entry in reversed(event.logs):
            found = steps_in(getattr(entry, "message", None) or "")
            if found:
                return found
    if isinstance(event, Completed) and progress.steps is not None and not event.error:
        return progress.steps[1], progress.steps[1]
    return None
