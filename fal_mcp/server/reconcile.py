"""Submits whose answer was lost: never sent again, settled through fal's request history in the background.

fal has no idempotency key, and its request history lists a request only once it has finished (its
default sort is by end time), some time after that. So a lost answer cannot be settled on the spot:
the job is recorded as ``UNKNOWN`` ("outcome unknown"), the agent is told so, and this module keeps
looking — first after a few seconds, then less and less often, for :attr:`Settings.reconcile_window_seconds`.
Once fal lists the request, the ledger gets its request id and outcome, and ``jobs_list`` shows them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from fal_mcp.fal import errors as fe
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.fal.client import FalClient
    from fal_mcp.ledger import OwnedLedger
    from fal_mcp.server.state import ServerState

log = get_logger(__name__)

MAX_LOOKUP_INTERVAL = 60.0  # seconds between history lookups, once they have backed off
HISTORY_WINDOW = 60.0  # look for the submit from this long before it was recorded (clock skew)


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
