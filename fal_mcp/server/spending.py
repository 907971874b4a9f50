"""The spend gate's MCP face: check every input, then go, ask the user, or refuse — before anything is paid.

:func:`prepare_paid` is the one road to a paid submit for every paying tool: input checked (schema,
files), cost estimated, then :mod:`fal_mcp.spend` decides. When it says "ask":

* a host with form elicitation was already asked by the tool's resolver (:func:`ask_one` /
  :func:`ask_many`, the SDK's ``Resolve(Elicit(...))`` form, which works in both protocol eras);
  accept goes on, decline or cancel refuses;
* any other host gets an ``approval_required`` result with the estimate and a one-time
  ``confirm_token`` bound to this caller, input and price; the call made again with it goes on.

Only then are local files uploaded and the job submitted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel, Field

from fal_mcp.digest import input_digest
from fal_mcp.log import get_logger
from fal_mcp.server.errors import ToolFailure
from fal_mcp.server.inputs import PreparedInput, check_input, plan_input, upload_local_files
from fal_mcp.spend import Decision, Quote, Spent, Verdict, budget_text, decide, format_usd, price_drivers

if TYPE_CHECKING:
    from fal_mcp.server.jobs import Call
    from fal_mcp.server.state import ServerState

log = get_logger(__name__)

NOT_ASKED = "not asked"  # a resolver's outcome when it did not (or could not) show the form
DAY_SECONDS = 86400.0


class SpendApproval(BaseModel):
    """The form a host shows the user (booleans render as a checkbox or yes/no)."""

    approve: bool = Field(description="Run it and pay for it")


@dataclass
class PaidPlan:
    """Checked inputs with their quote; ``spent`` is what the budgets knew before this call."""

    inputs: list[PreparedInput]
    quote: Quote
    spent: Spent | None = None

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


async def plan_paid(call: Call, endpoint_id: str, data: list[dict[str, Any]], *, roots: tuple[Path, ...]) -> PaidPlan:
    """Every check that needs no money, for each input: values, schema, local files, cost."""
    inputs = [await plan_input(call.fal, call.state.settings, endpoint_id, item, roots=roots) for item in data]
    for prepared in inputs:
        await check_input(call.fal, call.state.settings, prepared)
    return PaidPlan(inputs, quote_of(endpoint_id, inputs))


async def spent_so_far(call: Call) -> Spent | None:
    """What the budgets count as spent (from the ledger); ``None`` when no budget is set.

    With a budget set and no ledger to read, nothing can be checked, so the call is refused.
    """
    settings = call.state.settings
    if not settings.spend_limits.budgeted:
        return None
    if not call.ledger.available:
        raise ToolFailure(
            "refused: a spend budget is set but the job ledger that records spending is unavailable "
            f"({call.ledger.error}), so the budget cannot be checked. Nothing was submitted or charged.",
            kind="budget",
            next_step="Call again in a minute (the ledger is retried); the user can fix or unset the ledger path.",
        )
    now = time.time()
    today = await call.ledger.spent_since(now - DAY_SECONDS)
    session = await call.ledger.spent_since(call.state.started_at)
    return Spent(round(today, 6), round(session, 6))


def _describe(quote: Quote) -> str:
    cost = "cost unknown" if quote.usd is None else f"about {format_usd(quote.usd)}"
    drivers = ", ".join(f"{k}={v}" for k, v in quote.drivers.items())
    return f"{quote.endpoint_id} ({cost}; {quote.basis}{'; ' + drivers if drivers else ''})"


def approval_message(quote: Quote, decision: Decision, spent: Spent | None, limits: Any) -> str:
    lines = [f"Run {_describe(quote)}? It needs your approval: {decision.reason}."]
    left = budget_text(limits, spent) if spent is not None else None
    if left:
        lines.append(left)
    return "\n".join(lines)


async def authorize(call: Call, plan: PaidPlan, approval: Any, confirm_token: str | None) -> None:
    """Go, or raise the refusal: over a limit or budget, declined, or approval still needed (with a token)."""
    limits = call.state.settings.spend_limits
    if not limits.any:
        return
    plan.spent = await spent_so_far(call)
    decision = decide(limits, plan.quote, plan.spent or Spent())
    nothing = "Nothing was submitted or charged."
    if decision.verdict is Verdict.REFUSE:
        raise ToolFailure(
            f"refused: {decision.reason}. {nothing}",
            kind=decision.kind,
            endpoint_id=plan.quote.endpoint_id,
            cost_estimate_usd=plan.quote.usd,
            limit_usd=limits.max_cost_usd if decision.kind == "cost_limit" else None,
        )
    if decision.verdict is Verdict.GO:
        return
    if isinstance(approval, AcceptedElicitation) and isinstance(approval.data, SpendApproval):
        if approval.data.approve:
            log.info("spend.approved", how="elicitation", endpoint_id=plan.quote.endpoint_id, usd=plan.quote.usd)
            return
        approval = DeclinedElicitation()
    if isinstance(approval, DeclinedElicitation | CancelledElicitation):
        raise ToolFailure(
            f"the user {approval.action}d running {_describe(plan.quote)}. {nothing}",
            kind="declined",
            endpoint_id=plan.quote.endpoint_id,
            cost_estimate_usd=plan.quote.usd,
        )
    tokens = call.state.confirmations
    why = None
    if confirm_token:
        why = tokens.redeem(confirm_token, call.owner, plan.quote)
        if why is None:
            log.info("spend.approved", how="confirm_token", endpoint_id=plan.quote.endpoint_id, usd=plan.quote.usd)
            return
    token = tokens.issue(call.owner, plan.quote)
    refused = f"The confirm_token given was refused: {why}. " if why else ""
    left = budget_text(limits, plan.spent or Spent())
    raise ToolFailure(
        f"{refused}approval needed before paying: {decision.reason}. Call: {_describe(plan.quote)}. "
        f"{left + ' ' if left else ''}{nothing}",
        kind="approval_required",
        endpoint_id=plan.quote.endpoint_id,
        cost_estimate_usd=plan.quote.usd,
        confirm_token=token,
        next_step=f"Ask the user; if they agree, call again with the same arguments plus confirm_token='{token}' "
        "(valid once, for this exact input and price, for 10 minutes).",
    )


async def pay_ready(call: Call, plan: PaidPlan, approval: Any, confirm_token: str | None) -> None:
    """The last step before a submit: authorize, then upload the local files."""
    await authorize(call, plan, approval, confirm_token)
    for prepared in plan.inputs:
        await upload_local_files(call.fal, prepared)


def authorizer(
    call: Call, plan: PaidPlan, approval: Any, confirm_token: str | None, *, many: bool = False
) -> Callable[[], Awaitable[Any]]:
    """This call's spend gate as the JobService's ``authorize`` step: :func:`pay_ready`, then the input
    to send (``many``: the list of inputs)."""

    async def authorize() -> Any:
        await pay_ready(call, plan, approval, confirm_token)
        data = [prepared.data for prepared in plan.inputs]
        return data if many else data[0]

    return authorize


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
        plan = await plan_paid(call, endpoint, data, roots=await state.roots(ctx))
        if not fresh:
            reusable = await call.ledger.find_reusable(endpoint, plan.quote.digest, state.settings.reuse_window_seconds)
            if reusable is not None:
                return NOT_ASKED  # re-attaches: no new charge
        spent = await spent_so_far(call)
        decision = decide(limits, plan.quote, spent or Spent())
        if decision.verdict is not Verdict.ASK:
            return NOT_ASKED
        return Elicit(approval_message(plan.quote, decision, spent, limits), SpendApproval)
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
