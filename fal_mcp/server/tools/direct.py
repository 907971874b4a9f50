"""Direct tools: fal_run (one HTTP call), fal_stream (partial outputs as progress), fal_realtime (WebSocket)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from fal_mcp.fal import errors as fe
from fal_mcp.job_service import parse_endpoint
from fal_mcp.server import results
from fal_mcp.server.errors import ToolFailure, tool_errors
from fal_mcp.server.jobs import Call
from fal_mcp.server.outputs import JobOutput, RealtimeOutput, StreamOutput
from fal_mcp.server.spending import ConfirmToken, ManyApproval, OneApproval, authorizer, plan_paid, spend_note

PAID = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
EndpointArg = Annotated[str, Field(description="Model endpoint id, e.g. fal-ai/flux/dev")]
InputArg = Annotated[dict[str, Any], Field(description="The model's input fields (see model_schema)")]
MAX_REALTIME_INPUTS = 64


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


@tool_errors
async def fal_run(
    ctx: Context,
    endpoint_id: EndpointArg,
    input: InputArg,
    confirm_token: ConfirmToken = None,
    approval: OneApproval = None,  # type: ignore[assignment]  # filled by the spend gate's resolver
) -> Annotated[CallToolResult, JobOutput]:
    """Run a fast model in one call (no queue). For anything slow use fal_subscribe.
    Costs money: bills the user's fal account (may ask approval)."""
    endpoint = parse_endpoint(endpoint_id)
    call = await Call.start(ctx, "fal_run")
    plan = await plan_paid(call, endpoint, [input], roots=await call.state.roots(ctx))
    prepared = plan.inputs[0]

    run = await call.jobs.run(
        endpoint,
        lambda data: call.fal.runs.run(endpoint, data, **call.state.settings.privacy_options()),
        authorize=authorizer(call, plan, approval, confirm_token),
        cost_estimate_usd=prepared.cost_estimate_usd,
    )
    job = JobOutput(
        status="COMPLETED",
        endpoint_id=endpoint,
        request_id=run.request_id,
        output=run.data,
        elapsed_seconds=call.elapsed(),
        cost_estimate_usd=prepared.cost_estimate_usd,
        spend=spend_note(call, plan),
    )
    return await results.job_result(call, job)


@tool_errors
async def fal_stream(
    ctx: Context,
    endpoint_id: EndpointArg,
    input: InputArg,
    confirm_token: ConfirmToken = None,
    approval: OneApproval = None,  # type: ignore[assignment]  # filled by the spend gate's resolver
) -> Annotated[CallToolResult, StreamOutput]:
    """Run a streaming model (e.g. an LLM): partial outputs arrive as progress messages; returns the final one.
    Costs money: bills the user's fal account (may ask approval)."""
    endpoint = parse_endpoint(endpoint_id)
    call = await Call.start(ctx, "fal_stream")
    plan = await plan_paid(call, endpoint, [input], roots=await call.state.roots(ctx))
    prepared = plan.inputs[0]
    last: Any = None
    count = 0
    cost = prepared.cost_estimate_usd
    authorize = authorizer(call, plan, approval, confirm_token)
    async with (
        call.jobs.direct(endpoint, authorize=authorize, cost_estimate_usd=cost) as data,
        call.reporter.heartbeat(),
    ):
        with _no_such_mode(endpoint, "streaming"):
            privacy = call.state.settings.privacy_options()
            async for event in call.fal.runs.stream(endpoint, data, **privacy):
                count += 1
                last = event
                await call.reporter.report(_partial_text(event), steps=_stream_steps(event))
    if count == 0:
        raise ToolFailure(f"{endpoint} closed its stream without any output", kind="fal_error")
    return results.stream_result(
        call,
        StreamOutput(
            endpoint_id=endpoint,
            output=last,
            events=count,
            files=results.find_files(last),
            cost_estimate_usd=cost,
            spend=spend_note(call, plan),
        ),
    )


@tool_errors
async def fal_realtime(
    ctx: Context,
    endpoint_id: EndpointArg,
    inputs: Annotated[list[dict[str, Any]], Field(min_length=1, description="Inputs to send, in order")],
    confirm_token: ConfirmToken = None,
    approval: ManyApproval = None,  # type: ignore[assignment]  # filled by the spend gate's resolver
) -> RealtimeOutput:
    """Send several inputs over one realtime WebSocket connection (e.g. fal-ai/fast-lcm-diffusion); outputs in order.
    Costs money: bills the user's fal account (may ask approval)."""
    endpoint = parse_endpoint(endpoint_id)
    if len(inputs) > MAX_REALTIME_INPUTS:
        raise ToolFailure(f"at most {MAX_REALTIME_INPUTS} inputs per call, got {len(inputs)}", kind="invalid_argument")
    call = await Call.start(ctx, "fal_realtime")
    # Limits, budgets and approval hold for the call: the sum over every input, before the connection opens.
    plan = await plan_paid(call, endpoint, inputs, roots=await call.state.roots(ctx))
    prepared = plan.inputs

    async def received(done: int, _output: dict[str, Any]) -> None:
        await call.reporter.report(f"output {done}/{len(prepared)}", steps=(done, len(prepared)))

    cost = plan.quote.usd
    authorize = authorizer(call, plan, approval, confirm_token, many=True)
    async with call.jobs.direct(endpoint, authorize=authorize, cost_estimate_usd=cost) as data:
        await call.reporter.report(f"connecting to {endpoint} (realtime)")
        async with call.reporter.heartbeat():
            with _no_such_mode(endpoint, "realtime"):
                outputs = await call.fal.realtime.run_many(endpoint, data, on_output=received)
    files = [f for out in outputs for f in results.find_files(out)]
    return RealtimeOutput(
        endpoint_id=endpoint,
        outputs=[results.shorten_data_uris(o) for o in outputs],
        files=files[: results.MAX_FILES],
        cost_estimate_usd=cost,
        spend=spend_note(call, plan),
    )


def register(server: MCPServer) -> None:
    server.add_tool(fal_run, title="Run a fast fal model", annotations=PAID)
    server.add_tool(fal_stream, title="Stream a fal model", annotations=PAID)
    server.add_tool(fal_realtime, title="fal realtime session", annotations=PAID)
