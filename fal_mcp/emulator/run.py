"""How a model call arrives and runs: input/header parsing, the run context, outcomes, and ``/run`` (fal.run).

The queue (``queue.py``) uses the same parsing and execution; only the scheduling differs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import anyio
import httpx2
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.digest import input_digest
from fal_mcp.emulator.catalog import NOT_RUNNABLE_NAME, RUNS_OFFLINE_TAG, catalog, match, runnable_ids
from fal_mcp.emulator.models import EmulatedModel, ModelError, app_of
from fal_mcp.emulator.models.base import error_detail, request_error
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

PRIORITIES = ("normal", "low")
FETCH_TIMEOUT_SECONDS = 30.0


class GatewayError(Exception):
    """An answer the gateway gives before any model runs (auth, routing, body, headers)."""

    def __init__(self, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status_code}: {body}")
        self.response = JSONResponse(body, status_code=status_code, headers=headers)


def bad_request(detail: str) -> GatewayError:
    return GatewayError(400, {"detail": detail, "error_type": "bad_request"}, {"x-fal-error-type": "bad_request"})


@dataclass(frozen=True)
class Target:
    """What a request path addresses: an app, and the model serving it (None: the app has no such path)."""

    path: str
    app: str
    model: EmulatedModel | None
    subpath: str  # what follows the model's endpoint id (e.g. "stream"); "" for the model itself


def not_runnable(state: EmulatorState, endpoint_id: str) -> GatewayError:
    """404 for a listed endpoint that has no offline stand-in: says so, and names the ones that run."""
    model = state.models.get(endpoint_id)
    reason = (model.unavailable_reason if model is not None else None) or (
        "the emulator serves fal's real schema, price and metadata for it, but has no offline stand-in"
    )
    detail = (
        f"{endpoint_id} is not runnable in the offline emulator: {reason}. Models that run offline: "
        f"{', '.join(runnable_ids(state))} (tagged '{RUNS_OFFLINE_TAG}'; in search the others' names end with "
        f"'{NOT_RUNNABLE_NAME}'). Use one of those, or a real fal key to run this one."
    )
    return GatewayError(404, {"detail": detail})


def resolve(state: EmulatorState, path: str) -> Target:
    """Route ``path`` like fal's gateway: unknown apps are 404 here; unknown sub-paths are the runner's 404.

    A listed endpoint that cannot run offline is refused here too, before anything is queued.
    """
    path = path.strip("/")
    entry = match(catalog(state), path)
    if entry is not None and not entry.runnable:
        raise not_runnable(state, entry.info.endpoint_id)
    app = app_of(path)
    if app is None or not any(model.available for model in state.models.by_app(app)):
        alias = path.split("/")[1] if path.count("/") >= 1 else path
        raise GatewayError(404, {"detail": f'Application "{alias}" not found'})
    model = state.models.get(path)
    base = model.info.endpoint_id if model else app
    return Target(path=path, app=app, model=model, subpath=path[len(base) :].strip("/"))


@dataclass(frozen=True)
class CallOptions:
    """fal's platform headers and query parameters of a submit or run."""

    start_timeout: float | None = None
    priority: str = "normal"
    runner_hint: str | None = None
    store_io: bool = True
    lifecycle: dict[str, Any] | None = None
    webhook_url: str | None = None
    max_queue_length: int | None = None


def parse_options(request: Request) -> CallOptions:
    """Read ``X-Fal-*`` headers and ``fal_*`` query parameters; malformed values are 400 ``bad_request``."""
    headers, query = request.headers, request.query_params
    start_timeout: float | None = None
    if (raw := headers.get("x-fal-request-timeout")) is not None:
        try:
            start_timeout = float(raw)
        except ValueError:
            raise bad_request(f"Invalid X-Fal-Request-Timeout header: {raw!r} is not a number of seconds") from None
        if not start_timeout > 0:
            raise bad_request(f"Invalid X-Fal-Request-Timeout header: {raw!r} must be greater than 0")
    priority = headers.get("x-fal-queue-priority", "normal").strip().lower() or "normal"
    if priority not in PRIORITIES:
        raise bad_request(f"Invalid X-Fal-Queue-Priority header: {priority!r} (expected 'normal' or 'low')")
    lifecycle: dict[str, Any] | None = None
    if raw := headers.get("x-fal-object-lifecycle-preference") or headers.get("x-fal-object-lifecycle"):
        try:
            lifecycle = json.loads(raw)
        except ValueError:
            raise bad_request("Invalid X-Fal-Object-Lifecycle-Preference header: not JSON") from None
    max_queue_length: int | None = None
    if (raw := query.get("fal_max_queue_length")) is not None:
        try:
            max_queue_length = int(raw)
        except ValueError:
            raise bad_request(f"Invalid fal_max_queue_length: {raw!r} is not an integer") from None
    return CallOptions(
        start_timeout=start_timeout,
        priority=priority,
        runner_hint=headers.get("x-fal-runner-hint"),
        store_io=headers.get("x-fal-store-io", "1").strip() != "0",
        lifecycle=lifecycle,
        webhook_url=query.get("fal_webhook") or None,
        max_queue_length=max_queue_length,
    )


async def read_input(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON object body; 413 past ``max_bytes``, 422 (FastAPI's shape) when it is not a JSON object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise GatewayError(413, {"detail": f"Request body too large (limit {max_bytes} bytes)"})
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise GatewayError(413, {"detail": f"Request body too large (limit {max_bytes} bytes)"})
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        detail = {
            "type": "json_invalid",
            "loc": ["body", position],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": getattr(exc, "msg", str(exc))},
        }
        raise GatewayError(422, {"detail": [detail]}) from None
    if not isinstance(value, dict):
        detail = {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": value,
        }
        raise GatewayError(422, {"detail": [detail]})
    return value


def caller_id(request: HTTPConnection) -> str | None:
    """A non-secret name for the credentials of a request (None without usable ``Key``/``Bearer`` ones).

    ``Key <id>:<secret>`` → ``<id>`` (fal's public key id); any other key or a bearer token →
    ``sha256:<first 12 hex digits>``. The raw key is never kept or logged.
    """
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() not in ("key", "bearer") or not credentials:
        return None
    key_id, colon, secret = credentials.partition(":")
    if scheme.lower() == "key" and colon and key_id and secret:
        return key_id
    return "sha256:" + hashlib.sha256(credentials.encode()).hexdigest()[:12]


def count_submission(state: EmulatorState, endpoint_id: str, data: dict[str, Any]) -> None:
    state.submissions[f"{endpoint_id} {input_digest(data)}"] += 1


def log_entry(message: str, level: str = "INFO") -> dict[str, Any]:
    """A fal log line (timestamp ISO without zone, as in fal's examples)."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    return {"message": message, "timestamp": now, "level": level, "source": "USER", "labels": {}}


class CallContext:
    """The :class:`RunContext` the core gives a running model."""

    def __init__(
        self,
        state: EmulatorState,
        request_id: str,
        base_url: str,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.state = state
        self.request_id = request_id
        self.base_url = base_url.rstrip("/")
        self._on_log = on_log

    async def log(self, message: str, level: str = "INFO") -> None:
        if self._on_log is not None:
            self._on_log(log_entry(message, level))

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(self.state.config.scaled(seconds))

    async def fetch(self, url: str, field: str = "image_url") -> tuple[bytes, str]:
        """Bytes and content type of a data URI, a file stored here, or any http(s) URL."""
        try:
            if url.startswith("data:"):
                return _decode_data_uri(url)
            if (stored := await self.state.files.read_url(url)) is not None:
                return stored
            if url.startswith(("http://", "https://")):
                async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=True) as client:
                    response = await client.get(url)
                if response.status_code < 400:
                    kind = response.headers.get("content-type", "application/octet-stream").split(";")[0]
                    return response.content, kind
        except (ValueError, httpx2.HTTPError) as exc:
            log.info("emulated model could not fetch input file", url=url[:200], error=str(exc))
        raise ModelError(
            422,
            {
                "detail": [
                    error_detail(
                        "file_download_error",
                        "Failed to download the file. Please check if the URL is accessible.",
                        ["body", field],
                        input=url if len(url) <= 200 else url[:200] + "…",
                    )
                ]
            },
        )

    async def store(self, data: bytes, content_type: str, file_name: str) -> dict[str, Any]:
        """Put an output file on the emulator's CDN; fal's ``File`` dict."""
        path = self.state.files.put(data, content_type, file_name)
        url = self.base_url + path
        return {"url": url, "content_type": content_type, "file_name": file_name, "file_size": len(data)}


def _decode_data_uri(url: str) -> tuple[bytes, str]:
    header, sep, payload = url[len("data:") :].partition(",")
    if not sep:
        raise ValueError("malformed data URI")
    params = header.split(";")
    kind = params[0] or "text/plain"
    if "base64" in params[1:]:
        try:
            return base64.b64decode(payload, validate=False), kind
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in data URI: {exc}") from exc
    return unquote_to_bytes(payload), kind


@dataclass
class Outcome:
    """What the runner answered: status, JSON body and headers, replayed verbatim by the queue's result."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def error(self) -> str | None:
        """The human ``error`` of a COMPLETED status: the detail text, or the first validation message."""
        if self.ok:
            return None
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "msg" in detail[0]:
            return str(detail[0]["msg"])
        return f"Invalid status code: {self.status_code}"

    @classmethod
    def from_error(cls, error: ModelError, **extra_headers: str) -> Outcome:
        error_type = error.error_type or (error.body.get("error_type") if isinstance(error.body, dict) else None)
        headers = {"x-fal-error-type": error_type} if error_type else {}
        return cls(error.status_code, error.body, {**headers, **extra_headers}, error_type)

    def response(self, request_id: str) -> JSONResponse:
        return JSONResponse(self.body, self.status_code, headers={**self.headers, "x-fal-request-id": request_id})


def _format_units(units: float) -> str:
    return str(int(units)) if float(units).is_integer() else f"{units:.6g}"


def not_found_path(subpath: str) -> ModelError:
    return ModelError(404, {"detail": f"Path /{subpath} not found"})


async def execute(target: Target, data: dict[str, Any], ctx: CallContext) -> Outcome:
    """Run one call on the "runner": path check, validation, the model; every failure becomes an Outcome."""
    try:
        if target.model is None or target.subpath:
            raise not_found_path(target.subpath or target.path[len(target.app) :].strip("/"))
        target.model.validate(data)
        prepared = target.model.with_defaults(data)
        output = await target.model.run(prepared, ctx)
        units = target.model.billable_units(prepared, output)
        return Outcome(200, output, {"x-fal-billable-units": _format_units(units)})
    except ModelError as exc:
        return Outcome.from_error(exc)
    except Exception:
        log.exception("emulated model crashed", endpoint_id=target.path, request_id=ctx.request_id)
        return Outcome.from_error(request_error("runner_server_error", "Internal Server Error"))


async def run_endpoint(request: Request) -> Response:
    """``POST /run/{endpoint_id}`` (direct run) and ``…/stream`` (SSE); a key or an app's ``?fal_jwt_token=``."""
    state: EmulatorState = request.app.state.emulator
    if denied := state.auth_error(request, endpoint=request.path_params["path"]):
        return denied
    request_id = str(uuid.uuid4())
    try:
        parse_options(request)  # validated for fal's 400s; a direct run starts at once, so no deadline applies
        target = resolve(state, request.path_params["path"])
        data = await read_input(request, state.config.max_request_body_bytes)
    except GatewayError as exc:
        return exc.response
    count_submission(state, target.path, data)
    ctx = CallContext(state, request_id, state.public_base(request))
    if target.model is not None and target.subpath == "stream":
        return await _stream(target.model, data, ctx)
    outcome = await execute(target, data, ctx)
    return outcome.response(request_id)


async def _stream(model: EmulatedModel, data: dict[str, Any], ctx: CallContext) -> Response:
    """SSE of partial outputs; errors before the first event are plain JSON answers, later ones a final event."""
    try:
        if not model.supports_stream:
            raise not_found_path("stream")
        model.validate(data)
        events = model.stream(model.with_defaults(data), ctx)
        first = await anext(events)
    except ModelError as exc:
        return Outcome.from_error(exc).response(ctx.request_id)

    async def body() -> AsyncIterator[str]:
        yield f"data: {json.dumps(first)}\n\n"
        try:
            async for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except ModelError as exc:
            yield f"data: {json.dumps(exc.body)}\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"x-fal-request-id": ctx.request_id, "cache-control": "no-cache"},
    )


def routes(state: EmulatorState) -> list[BaseRoute]:
    return [Route("/{path:path}", run_endpoint, methods=["POST"])]
