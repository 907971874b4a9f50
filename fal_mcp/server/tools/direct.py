"""Direct tools: fal_run (one HTTP call), fal_stream (partial outputs as progress), fal_realtime (WebSocket)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from fal_mcp.job_service import parse_endpoint
from fal_mcp.server import results
from fal_mcp.server.errors import ToolFailure, tool_errors
from fal_mcp.server.jobs import Call
from fal_mcp.server.outputs import JobOutput, RealtimeOutput, StreamOutput
from fal_mcp.server.spending import ConfirmToken, ManyApproval, OneApproval, approver, spend_note

PAID = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
EndpointArg = Annotated[str, Field(description="Model endpoint id, e.g. fal-ai/flux/dev")]
InputArg = Annotated[dict[str, Any], Field(description="The model's input fields (see model_schema)")]
MAX_REALTIME_INPUTS = 64


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
    plan = await call.jobs.plan(endpoint, [input], roots=await call.state.roots(ctx))
    run = await call.jobs.run(plan, approve=approver(call, approval, confirm_token))
    job = JobOutput(
        status="COMPLETED",
        endpoint_id=endpoint,
        request_id=run.request_id,
        output=run.data,
        elapsed_seconds=call.elapsed(),
        cost_estimate_usd=plan.quote.usd,
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
    plan = await call.jobs.plan(endpoint, [input], roots=await call.state.roots(ctx))
    streamed = await call.jobs.stream(plan, approve=approver(call, approval, confirm_token))
    return results.stream_result(
        call,
        StreamOutput(
            endpoint_id=endpoint,
            output=streamed.last,
            events=streamed.events,
            files=results.find_files(streamed.last),
            cost_estimate_usd=plan.quote.usd,
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
    plan = await call.jobs.plan(endpoint, inputs, roots=await call.state.roots(ctx))
    outputs = await call.jobs.realtime(plan, approve=approver(call, approval, confirm_token))
    files = [f for out in outputs for f in results.find_files(out)]
    return RealtimeOutput(
        endpoint_id=endpoint,
        outputs=[results.shorten_data_uris(o) for o in outputs],
        files=files[: results.MAX_FILES],
        cost_estimate_usd=plan.quote.usd,
        spend=spend_note(call, plan),
    )


def register(server: MCPServer) -> None:
    server.add_tool(fal_run, title="Run a fast fal model", annotations=PAID)
    server.add_tool(fal_stream, title="Stream a fal model", annotations=PAID)
    server.add_tool(fal_realtime, title="fal realtime session", annotations=PAID)
