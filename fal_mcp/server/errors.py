"""The one place failures become tool results: ``isError`` with one text block the model can act on.

Every tool is wrapped by :func:`tool_errors`, and argument validation goes through
:func:`argument_error_result`; nothing reaches the client as a traceback or as the SDK's bare
"Error executing tool".

The shape of an error result, and why:

* **No ``structuredContent``.** A tool's ``structuredContent`` must match its ``outputSchema``, and the
  TypeScript SDK client (inside Claude Code, Cursor, VS Code, Gemini CLI, the Inspector) validates it
  even when ``isError`` is true: an ``{"error": …}`` object that matches no output schema makes the
  client throw instead of showing the error. Widening every output schema to admit the error object
  would make the success contract loose (every field optional) and the tool list bigger, and it
  would still not be read: Claude Code and Codex show the model only the first text block of an
  error. The spec puts tool errors in ``content``; so do we.
* **One self-sufficient text block**, which every host shows: what went wrong and its kind, each
  offending field with its rule and allowed values, the ``request_id``/``endpoint_id`` when there is
  one, and the next step.
* **The same facts, machine-readable, in ``_meta["fal-mcp/error"]``** (kind, message, fields, ids,
  next_step): programs and tests read that; no client validates ``_meta`` and no host shows it to the model.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec

import anyio
from mcp.types import CallToolResult, TextContent

from fal_mcp.config import ConfigError
from fal_mcp.failures import ERROR_KINDS, NEXT_STEPS, NOTHING_PAID, ToolFailure
from fal_mcp.fal import errors as fe
from fal_mcp.log import get_logger
from fal_mcp.redact import redact, redact_value

log = get_logger(__name__)

P = ParamSpec("P")

ERROR_META_KEY = "fal-mcp/error"


def _allowed_text(allowed: Any) -> str:
    if isinstance(allowed, list | tuple):
        return ", ".join(str(a) for a in allowed[:30]) + (", …" if len(allowed) > 30 else "")
    return str(allowed)


def error_text(error: dict[str, Any], tool: str | None = None) -> str:
    """The error as one block of plain text: everything a model needs, for hosts that show only text."""
    who = f"{tool} failed" if tool else "Failed"
    lines = [f"{who} [{error['kind']}]: {error['message'].rstrip()}"]
    fields = error.get("fields") or []
    if fields:
        lines.append("Fields to fix:")
        for f in fields:
            line = f"- {f.get('field', '(input)')}: {f.get('message', '')}"
            extras = []
            if f.get("rule"):
                extras.append(f"rule: {f['rule']}")
            if f.get("allowed") is not None:
                extras.append(f"allowed: {_allowed_text(f['allowed'])}")
            if extras:
                line += f" ({'; '.join(extras)})"
            lines.append(line)
    ids = [f"{key}: {error[key]}" for key in ("request_id", "endpoint_id", "incident") if error.get(key)]
    if ids:
        lines.append(" · ".join(ids))
    if error.get("next_step"):
        lines.append(f"Next step: {error['next_step']}")
    return "\n".join(lines)


def error_result(message: str, *, kind: str, tool: str | None = None, **details: Any) -> CallToolResult:
    """An ``isError`` result: one text block and a machine-readable copy in ``_meta`` (see the module doc)."""
    assert kind in ERROR_KINDS, kind
    details.setdefault("next_step", NEXT_STEPS[kind])
    error = redact_value(
        {"kind": kind, "message": redact(message), **{k: v for k, v in details.items() if v is not None}}
    )
    return CallToolResult(
        is_error=True,
        content=[TextContent(type="text", text=error_text(error, tool))],
        _meta={ERROR_META_KEY: error},
    )


def _field_errors(exc: fe.ValidationError) -> list[dict[str, Any]]:
    """fal's 422 ``detail`` entries (FastAPI/pydantic style), with the allowed values or bounds spelled out."""
    fields = []
    for e in exc.errors:
        entry: dict[str, Any] = {"field": e.field_path, "message": e.msg, "rule": e.type}
        ctx = dict(e.ctx) if e.ctx else {}
        if ctx:
            entry["context"] = ctx
            allowed = _allowed_from_context(ctx)
            if allowed is not None:
                entry["allowed"] = allowed
        fields.append(entry)
    return fields


def leaf_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """The real exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc


def describe(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(kind, message, details) for any exception a tool can meet; groups are unwrapped to their real cause."""
    if isinstance(exc, BaseExceptionGroup):  # the first diagnosable leaf wins over crashes and cancellations
        described = [describe(leaf) for leaf in leaf_exceptions(exc)]
        return next((d for d in described if d[0] != "internal"), ("internal", "", {}))
    if isinstance(exc, ToolFailure):
        return exc.kind, exc.message, exc.details
    from fal_mcp.guards import GuardError  # local: guards pull in more than errors need

    if isinstance(exc, GuardError):
        return "refused", str(exc), {}
    if isinstance(exc, ConfigError):
        return "config", f"configuration problem: {exc}", {}
    if isinstance(exc, fe.NotConfiguredError):
        return "not_configured", exc.message, {}
    if isinstance(exc, fe.InvalidArgumentError):  # endpoint ids, header values: refused before sending
        return "invalid_argument", exc.message, {}
    if isinstance(exc, fe.SubmitOutcomeUnknownError):
        return "submit_outcome_unknown", exc.message, {"endpoint_id": exc.endpoint_id}
    if isinstance(exc, fe.FalConnectionError):
        return "network", exc.message, {}
    if isinstance(exc, fe.FalAPIError):
        return _describe_api_error(exc)
    if isinstance(exc, fe.FalError):
        return "fal_error", exc.message, {}
    from fal_mcp.ledger import LedgerError  # local: the ledger pulls in sqlite

    if isinstance(exc, LedgerError):  # writes about a job fal has are best effort (jobs.recorded): none left
        return "busy", f"{exc}; nothing was submitted by this call", {}
    return "internal", "", {}


def _describe_api_error(exc: fe.FalAPIError) -> tuple[str, str, dict[str, Any]]:
    details: dict[str, Any] = {
        "status_code": exc.status_code,
        "error_type": exc.error_type,
        "request_id": exc.request_id,
        "endpoint_id": getattr(exc, "endpoint_id", None),
    }
    if isinstance(exc, fe.ContentPolicyError):
        return "content_policy", f"fal's safety filter refused the request: {exc.message}", details
    if isinstance(exc, fe.ValidationError):
        details["fields"] = _field_errors(exc)
        if details["fields"]:  # the text lists each field with its rule and allowed values: name them once here
            names = ", ".join(dict.fromkeys(f["field"] for f in details["fields"]))
            return "invalid_input", f"fal rejected the input ({names}).", details
        return "invalid_input", f"fal rejected the input: {exc.message}", details
    if isinstance(exc, fe.AuthenticationError):
        return "auth", f"fal rejected the API key (401): {exc.message}", details
    if isinstance(exc, fe.PermissionDeniedError):
        return "forbidden", f"the fal key may not do this (403): {exc.message}", details
    if isinstance(exc, fe.NotFoundError):
        return "not_found", f"fal: not found (404): {exc.message}", details
    if isinstance(exc, fe.RateLimitError):
        wait = f"Retry after {exc.retry_after:.0f}s." if exc.retry_after else NEXT_STEPS["rate_limited"]
        return "rate_limited", f"fal is rate limiting this key (429): {exc.message}", {**details, "next_step": wait}
    if isinstance(exc, fe.StartTimeoutError):
        return "start_timeout", f"the job did not start before its start_timeout: {exc.message}", details
    if isinstance(exc, fe.RequestCancelledError):
        return "cancelled", f"the request was cancelled: {exc.message}", details
    if isinstance(exc, fe.IngressError):
        return "fal_unavailable", exc.message, details
    if isinstance(exc, fe.ServerError):
        return "fal_error", f"fal or the model failed ({exc.status_code}): {exc.message}", details
    return "fal_error", f"fal answered {exc.status_code}: {exc.message}", details


def failure_result(exc: BaseException, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
    """The error result for ``exc``; the call's own request/endpoint ids are named when the error lacks them."""
    kind, message, details = describe(exc)
    for key in ("request_id", "endpoint_id"):
        given = (arguments or {}).get(key)
        if not details.get(key) and isinstance(given, str) and 0 < len(given) <= 200:
            details = {**details, key: given}
    if kind == "internal":
        incident = uuid.uuid4().hex[:8]
        log.error("tool.crashed", tool=tool, incident=incident, exc_info=exc)
        message = f"{tool} hit an internal error (incident {incident}, details in the server log)."
        details = {"incident": incident, **{k: v for k, v in details.items() if k in ("request_id", "endpoint_id")}}
    else:
        log.info("tool.failed", tool=tool, kind=kind, message=redact(message))
    return error_result(message, kind=kind, tool=tool, **details)


def _allowed_from_context(ctx: dict[str, Any]) -> Any:
    """What a pydantic-style error's ``ctx`` says is allowed: the expected values, or the bounds."""
    for key in ("expected", "allowed", "enum"):
        if ctx.get(key) is not None:
            return ctx[key]
    bounds = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}
    given = [
        f"{sign} {ctx[key]:g}" if isinstance(ctx[key], float) else f"{sign} {ctx[key]}"
        for key, sign in bounds.items()
        if key in ctx
    ]
    return ", ".join(given) or None


def argument_error_result(tool: str, exc: Any, input_schema: dict[str, Any] | None = None) -> CallToolResult:
    """The tool's own arguments broke its input schema (missing, wrong type, out of range): which and how."""
    properties = (input_schema or {}).get("properties") or {}
    fields: list[dict[str, Any]] = []
    seen: set[str] = set()
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        # ('wait_seconds', 'float') is a union variant's location: name the argument, keep list indexes.
        name = (loc[0] + "".join(f"[{p}]" for p in loc[1:] if p.isdigit())) if loc else "(arguments)"
        if name in seen:
            continue
        seen.add(name)
        entry: dict[str, Any] = {"field": name, "message": error.get("msg", "invalid"), "rule": error.get("type")}
        allowed = _allowed_from_context(error.get("ctx") or {})
        if allowed is not None:
            entry["allowed"] = allowed
        elif loc and isinstance(properties.get(loc[0]), dict) and properties[loc[0]].get("enum"):
            entry["allowed"] = properties[loc[0]]["enum"]
        fields.append(entry)
    names = ", ".join(f["field"] for f in fields[:5])
    return error_result(
        f"invalid arguments for {tool}: {names}. {NOTHING_PAID}",
        kind="invalid_argument",
        tool=tool,
        fields=fields,
    )


def unknown_tool_result(name: str, tools: list[str]) -> CallToolResult:
    """A call to a tool this server does not have: which ones it has (the closest first), nothing run."""
    import difflib

    shown = name if len(name) <= 80 else name[:80] + "…"
    close = difflib.get_close_matches(name.rsplit("__", 1)[-1], tools, n=1, cutoff=0.6)
    hint = f"Did you mean {close[0]}? " if close else ""
    log.info("tool.unknown", name=shown)
    return error_result(
        f"this server has no tool named {shown!r}; nothing was run or charged.",
        kind="not_found",
        next_step=f"{hint}Call one of this server's tools: {', '.join(tools)}.",
    )


def tool_errors(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Turn any exception (but cancellation) raised by a tool into an actionable error result."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            return await fn(*args, **kwargs)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            return failure_result(exc, fn.__name__, kwargs)

    return wrapper
