"""The one place failures become tool results: ``isError`` with a message the model can act on.

Every tool is wrapped by :func:`tool_errors`; nothing reaches the client as a traceback or as the SDK's
bare "Error executing tool".
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import anyio
from mcp.types import CallToolResult, TextContent

from fal_mcp.config import ConfigError
from fal_mcp.fal import errors as fe
from fal_mcp.log import get_logger
from fal_mcp.redact import redact, redact_value

log = get_logger(__name__)

P = ParamSpec("P")

# Every ``structuredContent.error.kind`` a tool can return (the skills document each one).
ERROR_KINDS = frozenset(
    {
        "invalid_argument",  # a tool argument is wrong (endpoint id, request id, missing path/url/data)
        "invalid_input",  # the model input breaks the model's schema (local check or fal's 422)
        "content_policy",  # fal's safety filter refused the prompt or media
        "cost_limit",  # the estimated cost is above FAL_MCP_MAX_COST_USD
        "not_configured",  # no usable fal key
        "config",  # a setting has an unusable value
        "refused",  # a file or URL was refused by the guards
        "auth",  # fal rejected the key
        "forbidden",  # the key may not do this
        "not_found",  # no such model or request
        "rate_limited",  # fal asks to slow down
        "start_timeout",  # the job did not start before its start_timeout
        "cancelled",  # the request was cancelled
        "fal_unavailable",  # fal's edge answered 5xx: fal looks down
        "fal_error",  # fal or the model failed
        "network",  # fal could not be reached
        "submit_outcome_unknown",  # a submit's answer was lost and fal's history could not settle it
        "internal",  # a bug in this server (logged with an incident id)
    }
)


class ToolFailure(Exception):
    """A failure the tool itself diagnosed; ``kind`` is a stable machine-readable code."""

    def __init__(self, message: str, *, kind: str = "invalid_argument", **details: Any) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; add it to ERROR_KINDS (and the skills' errors.md)")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.details = details


def error_result(message: str, *, kind: str, **details: Any) -> CallToolResult:
    assert kind in ERROR_KINDS, kind
    message = redact(message)
    error = {"kind": kind, "message": message, **{k: v for k, v in details.items() if v is not None}}
    return CallToolResult(
        is_error=True,
        content=[TextContent(type="text", text=message)],
        structured_content={"error": redact_value(error)},
    )


def _field_errors(exc: fe.ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": e.field_path, "message": e.msg, "rule": e.type, **({"context": dict(e.ctx)} if e.ctx else {})}
        for e in exc.errors
    ]


def describe(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(kind, message, details) for any exception a tool can meet."""
    if isinstance(exc, ToolFailure):
        return exc.kind, exc.message, exc.details
    from fal_mcp.server.guards import GuardError  # local: guards pull in more than errors need

    if isinstance(exc, GuardError):
        return "refused", str(exc), {}
    if isinstance(exc, ConfigError):
        return "config", f"configuration problem: {exc}", {}
    if isinstance(exc, fe.NotConfiguredError):
        return "not_configured", exc.message, {}
    if isinstance(exc, fe.InvalidEndpointIdError):
        return "invalid_argument", exc.message, {}
    if isinstance(exc, fe.SubmitOutcomeUnknownError):
        return (
            "submit_outcome_unknown",
            f"{exc.message} Check jobs_list before submitting again; do not resubmit blindly (it may charge twice).",
            {"endpoint_id": exc.endpoint_id},
        )
    if isinstance(exc, fe.FalConnectionError):
        return "network", f"{exc.message}. Check the network, then call again.", {}
    if isinstance(exc, fe.FalAPIError):
        return _describe_api_error(exc)
    if isinstance(exc, fe.FalError):
        return "fal_error", exc.message, {}
    return "internal", "", {}


def _describe_api_error(exc: fe.FalAPIError) -> tuple[str, str, dict[str, Any]]:
    details: dict[str, Any] = {
        "status_code": exc.status_code,
        "error_type": exc.error_type,
        "request_id": exc.request_id,
    }
    if isinstance(exc, fe.ContentPolicyError):
        message = f"fal's safety filter refused the request: {exc.message}. Rephrase the prompt."
        return "content_policy", message, details
    if isinstance(exc, fe.ValidationError):
        details["fields"] = _field_errors(exc)
        return (
            "invalid_input",
            f"fal rejected the input: {exc.message}. Fix these fields (model_schema shows the rules) and call again.",
            details,
        )
    if isinstance(exc, fe.AuthenticationError):
        return "auth", "fal rejected the API key (401). Check that FAL_KEY is a valid, current key.", details
    if isinstance(exc, fe.PermissionDeniedError):
        return "forbidden", f"the fal key may not do this (403): {exc.message}", details
    if isinstance(exc, fe.NotFoundError):
        return "not_found", f"fal: not found (404): {exc.message}", details
    if isinstance(exc, fe.RateLimitError):
        wait = f" Retry after {exc.retry_after:.0f}s." if exc.retry_after else " Wait a little and retry."
        return "rate_limited", f"fal is rate limiting this key (429): {exc.message}.{wait}", details
    if isinstance(exc, fe.StartTimeoutError):
        return "start_timeout", f"the job did not start before its start_timeout: {exc.message}", details
    if isinstance(exc, fe.RequestCancelledError):
        return "cancelled", f"the request was cancelled: {exc.message}", details
    if isinstance(exc, fe.IngressError):
        return "fal_unavailable", f"{exc.message}. fal looks unavailable; retry in a minute.", details
    if isinstance(exc, fe.ServerError):
        return "fal_error", f"fal or the model failed ({exc.status_code}): {exc.message}", details
    return "fal_error", f"fal answered {exc.status_code}: {exc.message}", details


def failure_result(exc: BaseException, tool: str) -> CallToolResult:
    kind, message, details = describe(exc)
    if kind == "internal":
        incident = uuid.uuid4().hex[:8]
        log.error("tool.crashed", tool=tool, incident=incident, exc_info=exc)
        message = f"{tool} hit an internal error (incident {incident}, details in the server log). Call it again."
        details = {"incident": incident}
    else:
        log.info("tool.failed", tool=tool, kind=kind, message=redact(message))
    return error_result(message, kind=kind, **details)


def tool_errors(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Turn any exception (but cancellation) raised by a tool into an actionable error result."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            return await fn(*args, **kwargs)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            return failure_result(exc, fn.__name__)

    return wrapper
