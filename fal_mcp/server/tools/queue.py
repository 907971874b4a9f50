"""Queue tools: fal_subscribe (submit and wait), queue_submit/status/result/cancel, jobs_list."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from fal_mcp.fal import errors as fe
from fal_mcp.fal._http import check_header_value
from fal_mcp.job_service import next_step_for, parse_endpoint
from fal_mcp.naming import NameTemplate
from fal_mcp.server import jobs, results
from fal_mcp.server.errors import ToolFailure, tool_errors
from fal_mcp.server.jobs import Call
from fal_mcp.server.outputs import CancelOutput, JobOutput, JobsListOutput, JobSummary, StatusOutput, SubmitOutput
from fal_mcp.server.saving import name_template
from fal_mcp.server.spending import (
    ConfirmToken,
    OneApproval,
    SubscribeApproval,
    approver,
    spend_note,
)
from fal_mcp.server.state import fal_of

PAID = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
CANCEL = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
# queue_result saves files when given download_dir (never overwriting: a repeat saves another copy).
SAVES_FILES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
LOCAL_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

EndpointArg = Annotated[str, Field(description="Model endpoint id, e.g. fal-ai/flux/dev")]
InputArg = Annotated[dict[str, Any], Field(description="The model's input fields (see model_schema)")]
RequestIdArg = Annotated[str, Field(description="request_id from a submit")]
OptionalEndpoint = Annotated[str | None, Field(description="Needed only for jobs not in jobs_list")]
WaitArg = Annotated[
    float | None, Field(ge=0, le=3600, description="Max seconds to wait (default ~50; 900 in Claude Code)")
]
Priority = Annotated[Literal["normal", "low"] | None, Field(description="Queue priority")]
Hint = Annotated[str | None, Field(description="Runner routing hint")]
StartTimeout = Annotated[float | None, Field(gt=1, description="Seconds the job may wait to start")]
ExpirationArg = Annotated[int | None, Field(ge=1, description="fal deletes output files after N s")]
StorePayloadArg = Annotated[bool | None, Field(description="false: fal keeps no copy of input/output")]
DownloadDir = Annotated[str | None, Field(description="Save output files into this directory")]
NameTemplateArg = Annotated[
    str | None,
    Field(description="Saved file names; fields {endpoint} {request_id} {index} {ext} {seed} {date} {time} {name}"),
]


def _wait_seconds(call: Call, requested: float | None) -> float:
    return jobs.default_wait_seconds(call.state.settings, call.ctx, requested)


async def _finish_or_report(
    call: Call,
    endpoint_id: str,
    request_id: str,
    *,
    wait_seconds: float,
    cost: float | None = None,
    reattached: bool = False,
    download_dir: str | None = None,
    name_template: NameTemplate | None = None,
    job_input: dict[str, Any] | None = None,
    spend: str | None = None,
) -> CallToolResult:
    outcome = await call.jobs.wait(endpoint_id, request_id, wait_seconds)
    if not outcome.done:
        job = JobOutput(
            status=outcome.status,
            endpoint_id=endpoint_id,
            request_id=request_id,
            queue_position=outcome.queue_position,
            logs=outcome.logs[-5:],
            elapsed_seconds=call.elapsed(),
            cost_estimate_usd=cost,
            reattached=reattached,
            spend=spend,
            next_step=next_step_for(request_id),
        )
        return results.pending_result(job)
    output = await call.jobs.result(endpoint_id, request_id)
    job = JobOutput(
        status="COMPLETED",
        endpoint_id=endpoint_id,
        request_id=request_id,
        output=output,
        logs=outcome.logs[-5:],
        elapsed_seconds=call.elapsed(),
        cost_estimate_usd=cost,
        reattached=reattached,
        spend=spend,
    )
    return await results.job_result(
        call, job, download_dir=download_dir, name_template=name_template, job_input=job_input, resumable=True
    )


@tool_errors
async def fal_subscribe(
    ctx: Context,
    endpoint_id: EndpointArg,
    input: InputArg,
    wait_seconds: WaitArg = None,
    priority: Priority = None,
    hint: Hint = None,
    start_timeout: StartTimeout = None,
    fresh: Annotated[bool, Field(description="Pay for a new run even if an identical job exists")] = False,
    download_dir: DownloadDir = None,
    file_name_template: NameTemplateArg = None,
    expiration_seconds: ExpirationArg = None,
    store_payload: StorePayloadArg = None,
    confirm_token: ConfirmToken = None,
    approval: SubscribeApproval = None,  # type: ignore[assignment]  # filled by the spend gate's resolver
) -> Annotated[CallToolResult, JobOutput]:
    """Run a model: submit, stream progress, wait up to wait_seconds. If not done by then, returns the
    request_id (the job keeps running; call queue_result). Local file paths in file fields are uploaded.
    Costs money: bills the user's fal account (may ask approval)."""
    endpoint = parse_endpoint(endpoint_id)
    check_header_value("hint", hint)  # before any upload, ledger entry or submit
    call = await Call.start(ctx, "fal_subscribe")
    template = name_template(file_name_template, call.state.settings.file_name_template)
    if download_dir:  # a refused folder must refuse the call before it is paid for
        await results.check_download_dir(call, download_dir)
    plan = await call.jobs.plan(endpoint, [input], roots=await call.state.roots(ctx))
    prepared = plan.inputs[0]
    privacy = call.state.settings.privacy_options(expiration_seconds, store_payload)
    options = {"priority": priority, "hint": hint, "start_timeout": start_timeout, **privacy}

    pay = functools.partial(call.jobs.reuse_or_submit, plan, approve=approver(call, approval, confirm_token))
    request_id, reattached = await pay(fresh=fresh, **options)
    finish = functools.partial(
        _finish_or_report,
        call,
        endpoint,
        wait_seconds=_wait_seconds(call, wait_seconds),
        download_dir=download_dir,
        name_template=template,
        job_input=prepared.data,
    )
    try:
        spend = None if reattached else spend_note(call, plan)
        return await finish(request_id, reattached=reattached, cost=prepared.cost_estimate_usd, spend=spend)
    except fe.NotFoundError:
        if not reattached:
            raise
    await call.reporter.report("the earlier job's result has expired on fal; submitting a new one")
    request_id, _ = await pay(fresh=True, **options)
    return await finish(request_id, cost=prepared.cost_estimate_usd, spend=spend_note(call, plan))


@tool_errors
async def queue_submit(
    ctx: Context,
    endpoint_id: EndpointArg,
    input: InputArg,
    webhook_url: Annotated[str | None, Field(description="fal POSTs the result here when done")] = None,
    priority: Priority = None,
    hint: Hint = None,
    start_timeout: StartTimeout = None,
    expiration_seconds: ExpirationArg = None,
    store_payload: StorePayloadArg = None,
    confirm_token: ConfirmToken = None,
    approval: OneApproval = None,  # type: ignore[assignment]  # filled by the spend gate's resolver
) -> SubmitOutput:
    """Queue a job and return its request_id at once (no waiting). Follow with queue_status/queue_result.
    Costs money: bills the user's fal account (may ask approval)."""
    endpoint = parse_endpoint(endpoint_id)
    check_header_value("hint", hint)  # before any upload, ledger entry or submit
    if webhook_url is not None and not webhook_url.lower().startswith(("https://", "http://")):
        raise ToolFailure("webhook_url must be an http(s) URL that fal can reach", kind="invalid_argument")
    call = await Call.start(ctx, "queue_submit")
    plan = await call.jobs.plan(endpoint, [input], roots=await call.state.roots(ctx))
    prepared = plan.inputs[0]

    handle = await call.jobs.submit(
        plan,
        approve=approver(call, approval, confirm_token),
        webhook_url=webhook_url,
        priority=priority,
        hint=hint,
        start_timeout=start_timeout,
        **call.state.settings.privacy_options(expiration_seconds, store_payload),
    )
    return SubmitOutput(
        request_id=handle.request_id,
        endpoint_id=endpoint,
        status="IN_QUEUE",
        queue_position=getattr(handle, "queue_position", None),
        cost_estimate_usd=prepared.cost_estimate_usd,
        spend=spend_note(call, plan),
        next_step=f"Call queue_result(request_id='{handle.request_id}') to wait for the output.",
    )


@tool_errors
async def queue_status(
    ctx: Context,
    request_id: RequestIdArg,
    endpoint_id: OptionalEndpoint = None,
    logs: Annotated[bool, Field(description="Include recent log lines")] = False,
) -> StatusOutput:
    """A queued job's status now: IN_QUEUE (with position), IN_PROGRESS, COMPLETED, FAILED or CANCELLED."""
    call = await Call.start(ctx, "queue_status")
    request_id, endpoint = await call.jobs.resolve_endpoint(request_id, endpoint_id)
    status = await call.jobs.status(endpoint, request_id, logs=logs)
    metrics = status.metrics or {}
    return StatusOutput(
        request_id=request_id,
        endpoint_id=endpoint,
        status="CANCELLED" if status.cancelled else "FAILED" if status.failed else status.status,
        queue_position=status.queue_position,
        logs=[entry.message for entry in (status.logs or [])][-20:],
        error=status.error,
        error_type=status.error_type,
        inference_seconds=metrics.get("inference_time") if isinstance(metrics, dict) else None,
    )


@tool_errors
async def queue_result(
    ctx: Context,
    request_id: RequestIdArg,
    endpoint_id: OptionalEndpoint = None,
    wait_seconds: WaitArg = None,
    download_dir: DownloadDir = None,
    file_name_template: NameTemplateArg = None,
) -> Annotated[CallToolResult, JobOutput]:
    """Wait (bounded, with progress) for a queued job and return its output, or its status if still running."""
    call = await Call.start(ctx, "queue_result")
    template = name_template(file_name_template, call.state.settings.file_name_template)
    request_id, endpoint = await call.jobs.resolve_endpoint(request_id, endpoint_id)
    return await _finish_or_report(
        call,
        endpoint,
        request_id,
        wait_seconds=_wait_seconds(call, wait_seconds),
        download_dir=download_dir,
        name_template=template,
    )


@tool_errors
async def queue_cancel(ctx: Context, request_id: RequestIdArg, endpoint_id: OptionalEndpoint = None) -> CancelOutput:
    """Cancel a queued or running job. A job already running may still finish (and be billed)."""
    call = await Call.start(ctx, "queue_cancel")
    request_id, endpoint = await call.jobs.resolve_endpoint(request_id, endpoint_id)
    value = await call.jobs.cancel(endpoint, request_id, why="cancelled by queue_cancel")
    if value == "CANCELLATION_REQUESTED":
        message = "Cancellation requested: a queued job is removed; a running one is stopped if the model allows."
    else:
        message = "The job had already completed; nothing was cancelled. Use queue_result to get its output."
    return CancelOutput(request_id=request_id, endpoint_id=endpoint, outcome=value, message=message)


@tool_errors
async def jobs_list(
    ctx: Context,
    status: Annotated[
        Literal["running", "finished", "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "UNKNOWN"] | None,
        Field(description="Filter by state"),
    ] = None,
    endpoint_id: Annotated[str | None, Field(description="Filter by model")] = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
) -> JobsListOutput:
    """Jobs you submitted (newest first) with their last known state, from the local ledger."""
    call = await Call.start(ctx, "jobs_list")
    state, ledger = call.state, call.ledger
    if not ledger.available:
        return JobsListOutput(jobs=[], ledger=f"the job ledger is unavailable: {ledger.error}")
    notice, state.ledger_notice = state.ledger_notice, None
    records = await ledger.list(status=status, endpoint_id=endpoint_id, limit=limit)
    return JobsListOutput(
        jobs=[
            JobSummary(
                request_id=r.request_id,
                job_id=r.job_id,
                endpoint_id=r.endpoint_id,
                status=r.status,
                created_at=r.created,
                updated_at=r.updated,
                origin_tool=r.origin_tool,
                input_preview=r.input_preview,
                result_urls=list(r.result_urls or []),
                error=r.error,
                fal=fal_of(r.owner),
            )
            for r in records
        ],
        ledger=notice,
    )


def register(server: MCPServer) -> None:
    server.add_tool(fal_subscribe, title="Run a fal model (wait with progress)", annotations=PAID)
    server.add_tool(queue_submit, title="Queue a fal job", annotations=PAID)
    server.add_tool(queue_status, title="fal job status", annotations=READ)
    server.add_tool(queue_result, title="fal job result", annotations=SAVES_FILES)
    server.add_tool(queue_cancel, title="Cancel a fal job", annotations=CANCEL)
    server.add_tool(jobs_list, title="Your fal jobs", annotations=LOCAL_READ)
