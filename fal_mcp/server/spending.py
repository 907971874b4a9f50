"""The spend gate's MCP face: how a paid call asks the user.

The JobService checks every input and quotes the call (:meth:`~fal_mcp.job_service.JobService.plan`), and
:mod:`fal_mcp.spend` decides — go, refuse, or ask. When it says "ask":

* a host with form elicitation was already asked by the tool's resolver (:func:`ask_one` /
  :func:`ask_many`, the SDK's ``Resolve(Elicit(...))`` form, which works in both protocol eras);
  accept goes on, decline or cancel refuses;
* any other host gets an ``approval_required`` result with the estimate and a one-time
  ``confirm_token`` bound to this caller, input and price; the call made again with it goes on.

:func:`approver` is that step, handed to the JobService's paying methods; only after it are local files
uploaded and the job submitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel, Field

from fal_mcp.failures import NOTHING_PAID
from fal_mcp.job_service import Approve, PaidPlan, describe
from fal_mcp.log import get_logger
from fal_mcp.server.errors import ToolFailure
from fal_mcp.spend import Decision, Quote, Spent, Verdict, budget_text

if TYPE_CHECKING:
    from fal_mcp.server.jobs import Call
    from fal_mcp.server.state import ServerState

log = get_logger(__name__)

NOT_ASKED = "not asked"  # a resolver's outcome when it did not (or could not) show the form


class SpendApproval(BaseModel):
    """The form a host shows the user (booleans render as a checkbox or yes/no)."""

    approve: bool = Field(description="Run it and pay for it")


def approval_message(quote: Quote, decision: Decision, spent: Spent | None, limits: Any) -> str:
    lines = [f"Run {describe(quote)}? It needs your approval: {decision.reason}."]
    left = budget_text(limits, spent) if spent is not None else None
    if left:
        lines.append(left)
    return "\n".join(lines)


def approver(call: Call, approval: Any, confirm_token: str | None) -> Approve:
    """How this call asks the user, as the JobService's ``approve`` step (run only when fal_mcp.spend says
    "ask"): the host's form answer if the resolver showed one, else a valid ``confirm_token``; otherwise
    the refusal, with a new one-time token bound to this caller, input and price."""

    async def approve(plan: PaidPlan, decision: Decision) -> None:
        answer = approval
        if isinstance(answer, AcceptedElicitation) and isinstance(answer.data, SpendApproval):
            if answer.data.approve:
                log.info("spend.approved", how="elicitation", endpoint_id=plan.endpoint_id, usd=plan.quote.usd)
                return
            answer = DeclinedElicitation()
        if isinstance(answer, DeclinedElicitation | CancelledElicitation):
            raise ToolFailure(
                f"the user {answer.action}d running {describe(plan.quote)}. {NOTHING_PAID}",
                kind="declined",
                endpoint_id=plan.endpoint_id,
                cost_estimate_usd=plan.quote.usd,
            )
        tokens = call.state.confirmations
        why = None
        if confirm_token:
            why = tokens.redeem(confirm_token, call.owner, plan.quote)
            if why is None:
                log.info("spend.approved", how="confirm_token", endpoint_id=plan.endpoint_id, usd=plan.quote.usd)
                return
        token = tokens.issue(call.owner, plan.quote)
        refused = f"The confirm_token given was refused: {why}. " if why else ""
        left = budget_text(call.state.settings.spend_limits, plan.spent or Spent())
        raise ToolFailure(
            f"{refused}approval needed before paying: {decision.reason}. Call: {describe(plan.quote)}. "
            f"{left + ' ' if left else ''}{NOTHING_PAID}",
            kind="approval_required",
            endpoint_id=plan.endpoint_id,
            cost_estimate_usd=plan.quote.usd,
            confirm_token=token,
            next_step=f"Ask the user; if they agree, call again with the same arguments plus confirm_token='{token}' "
            "(valid once, for this exact input and price, for 10 minutes).",
        )

    return approve


def spend_note(call: Call, plan: PaidPlan) -> str | None:
    """Spent/remaining after this call, for its result (``None`` without a budget)."""
    after = plan.budget_after
    return budget_text(call.state.settings.spend_limits, after) if after is not None else None


# -- asking through the host (resolvers run before the tool body, in both protocol eras) -----------


def _can_elicit(ctx: Context) -> bool:
    caps = ctx.client_capabilities
    elicitation = getattr(caps, "elicitation", None) if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def _ask(
    ctx: Context, endpoint_id: str, data: list[dict[str, Any]], confirm_token: str | None, *, fresh: bool = True
) -> Elicit[SpendApproval] | str:
    """Show the approval form when this call will need approval and the host can show it.

    Never raises: anything unusual returns :data:`NOT_ASKED`, and the tool body (which re-checks
    everything) refuses with a token or the error.
    """
    from fal_mcp.job_service import parse_endpoint
    from fal_mcp.server import jobs

    try:
        state: ServerState = ctx.request_context.lifespan_context  # type: ignore[assignment]
        limits = state.settings.spend_limits
        if confirm_token or not limits.any or not _can_elicit(ctx) or not isinstance(data, list):
            return NOT_ASKED
        call = await jobs.Call.start(ctx, "spend_check")
        endpoint = parse_endpoint(endpoint_id)
        plan = await call.jobs.plan(endpoint, data, roots=await state.roots(ctx))
        if not fresh:
            reusable = await call.ledger.find_reusable(endpoint, plan.quote.digest, state.settings.reuse_window_seconds)
            if reusable is not None:
                return NOT_ASKED  # re-attaches: no new charge
        decision = await call.jobs.decision(plan)
        if decision is None or decision.verdict is not Verdict.ASK:
            return NOT_ASKED
        return Elicit(approval_message(plan.quote, decision, plan.spent, limits), SpendApproval)
    except Exception as exc:
        log.debug("spend.ask_skipped", error=type(exc).__name__)
        return NOT_ASKED


async def ask_subscribe(
    ctx: Context, endpoint_id: str, input: dict[str, Any], confirm_token: str | None, fresh: bool
) -> Elicit[SpendApproval] | str:
    return await _ask(ctx, endpoint_id, [input], confirm_token, fresh=fresh)


async def ask_one(
    ctx: Context, endpoint_id: str, input: dict[str, Any], confirm_token: str | None
) -> Elicit[SpendApproval] | str:
    return await _ask(ctx, endpoint_id, [input], confirm_token)


async def ask_many(
    ctx: Context, endpoint_id: str, inputs: list[dict[str, Any]], confirm_token: str | None
) -> Elicit[SpendApproval] | str:
    return await _ask(ctx, endpoint_id, inputs, confirm_token)


SubscribeApproval = Annotated[ElicitationResult[SpendApproval], Resolve(ask_subscribe)]
OneApproval = Annotated[ElicitationResult[SpendApproval], Resolve(ask_one)]
ManyApproval = Annotated[ElicitationResult[SpendApproval], Resolve(ask_many)]
ConfirmToken = Annotated[str | None, Field(description="Approval token from an approval_required result")]
