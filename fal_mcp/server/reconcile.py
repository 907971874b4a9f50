"""Submits whose answer was lost: never sent again, settled through fal's request history in the background.

fal has no idempotency key, and its request history lists a request only once it has finished (its
default sort is by end time), some time after that. So a lost answer cannot be settled on the spot:
the job is recorded as ``UNKNOWN`` ("outcome unknown"), the agent is told so, and this module keeps
looking — first after a few seconds, then less and less often, for :attr:`Settings.reconcile_window_seconds`.
Once fal lists the request, the ledger gets its request id and outcome, and ``jobs_list`` shows them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from fal_mcp.fal import errors as fe
from fal_mcp.log import get_logger
from fal_mcp.server.errors import ToolFailure

if TYPE_CHECKING:
    from fal_mcp.fal.client import FalClient
    from fal_mcp.ledger import OwnedLedger
    from fal_mcp.server.state import ServerState

log = get_logger(__name__)

MAX_LOOKUP_INTERVAL = 60.0  # seconds between history lookups, once they have backed off
HISTORY_WINDOW = 60.0  # look for the submit from this long before it was recorded (clock skew)


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


async def settle(
    state: ServerState, fal: FalClient, owner: str, job_id: str, endpoint_id: str, digest: str, sent_at: float
) -> bool:
    """Look the lost submit up in fal's history until it shows up or the window ends; True when found."""
    settings = state.settings
    delay = settings.reconcile_first_delay_seconds
    deadline = sent_at + settings.reconcile_window_seconds
    while True:
        await anyio.sleep(delay)
        ledger = await state.ledger_for(owner)
        if not ledger.available:
            return False
        try:
            found = await _look_up(fal, ledger, job_id, endpoint_id, digest, sent_at)
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


async def _look_up(
    fal: FalClient, ledger: OwnedLedger, job_id: str, endpoint_id: str, digest: str, sent_at: float
) -> bool:
    known = [r.request_id for r in await ledger.list(endpoint_id=endpoint_id, limit=500) if r.request_id]
    handle = await fal.queue.find_submission(endpoint_id, digest=digest, since=sent_at - HISTORY_WINDOW, exclude=known)
    if handle is None:
        return False
    await ledger.attach_request_id(job_id, handle.request_id, status="IN_QUEUE")
    log.info("reconcile.found", job_id=job_id, request_id=handle.request_id)
    await record_outcome(fal, ledger, endpoint_id, handle.request_id)
    return True


async def record_outcome(fal: FalClient, ledger: OwnedLedger, endpoint_id: str, request_id: str) -> None:
    """Write what fal now says about a found request into the ledger (best effort: queue_result can redo it)."""
    from fal_mcp.ledger import extract_result_urls

    try:
        status = await fal.queue.status(endpoint_id, request_id)
        if status.status != "COMPLETED":
            await ledger.update_status(request_id, status.status, queue_position=status.queue_position)
            return
        output = await fal.queue.result(endpoint_id, request_id)
    except fe.FalAPIError as exc:
        if isinstance(exc, fe.NotFoundError | fe.RateLimitError | fe.ResultNotReadyError):
            return  # expired, busy or not done after all: queue_result settles it later
        await ledger.update_status(request_id, "FAILED", error=exc.message, error_type=exc.error_type)
        return
    except fe.FalError as exc:
        log.info("reconcile.outcome_unavailable", request_id=request_id, error=exc.message)
        return
    await ledger.update_status(request_id, "COMPLETED", result_urls=extract_result_urls(output))
