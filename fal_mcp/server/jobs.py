"""A tool call's view of the server, and how long a waiting tool waits.

The paid job itself — submit once, wait, result, cancel, all on the ledger — is
:class:`fal_mcp.job_service.JobService`, which knows nothing of MCP; :meth:`Call.start` builds one for
the caller (their fal key, their ledger view, progress sent as MCP notifications).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fal_mcp.server.progress import ProgressReporter

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from fal_mcp.config import Settings
    from fal_mcp.fal.client import FalClient
    from fal_mcp.job_service import JobService
    from fal_mcp.ledger import OwnedLedger
    from fal_mcp.server.state import ServerState


@dataclass
class Call:
    """One tool call's view of the server: its fal client (its user's key), ledger view, progress and jobs."""

    state: ServerState
    ctx: Context | None
    fal: FalClient
    owner: str
    ledger: OwnedLedger
    reporter: ProgressReporter
    tool: str
    jobs: JobService
    started: float = field(default_factory=time.monotonic)

    @classmethod
    async def start(cls, ctx: Context | None, tool: str) -> Call:
        state: ServerState = ctx.request_context.lifespan_context  # type: ignore[union-attr, assignment]
        fal, owner = await state.fal_for(ctx)
        send = ctx.report_progress if ctx is not None else None
        reporter = ProgressReporter(send, heartbeat_seconds=state.settings.heartbeat_seconds)
        jobs = await state.job_service(fal, owner, reporter, tool)
        return cls(
            state=state, ctx=ctx, fal=fal, owner=owner, ledger=jobs.ledger, reporter=reporter, tool=tool, jobs=jobs
        )

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
