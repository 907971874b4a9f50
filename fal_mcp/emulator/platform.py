"""fal's Platform API (``api.fal.ai/v1``): model search, pricing, cost estimates, meta, request history.

Errors use the Platform API's own shape, ``{"error": {"type", "message"}}``. Model search is public;
pricing, estimates and request history need a key. Cursors encode a 1-based page number in base64
(``Mg==`` is page 2), as fal's do.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.emulator.catalog import CatalogEntry, catalog
from fal_mcp.emulator.openapi import build_openapi

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_IDS = 50
EXPANSIONS = ("openapi-3.0", "enterprise_status")
# Units a typical call bills, for ``historical_api_price`` estimates (e.g. a 5-second video); others 1.
TYPICAL_UNITS_PER_CALL = {"seconds": 5.0, "compute seconds": 10.0, "tokens": 1000.0}
# Where the emulator's webhooks come from: loopback (fal publishes its egress ranges here).
WEBHOOK_IP_RANGES = ["127.0.0.1/32", "::1/128"]


class PlatformError(Exception):
    """A Platform API error: HTTP status + fal's ``error.type``."""

    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"type": self.error_type, "message": self.message}}, status_code=self.status_code)


def _invalid(message: str) -> PlatformError:
    return PlatformError(400, "validation_error", message)


def _require_key(state: EmulatorState, request: Request) -> None:
    if state.auth_error(request) is not None:
        raise PlatformError(401, "authorization_error", "Authentication required")


def _many(request: Request, name: str) -> list[str]:
    """A repeatable query parameter, also accepting comma-separated values."""
    return [part.strip() for value in request.query_params.getlist(name) for part in value.split(",") if part.strip()]


def _ids(request: Request, *, required: bool) -> list[str]:
    ids = list(dict.fromkeys(_many(request, "endpoint_id")))
    if required and not ids:
        raise _invalid("endpoint_id is required")
    if len(ids) > MAX_IDS:
        raise _invalid(f"At most {MAX_IDS} endpoint_id values are allowed")
    return ids


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _invalid(f"limit must be an integer between 1 and {MAX_LIMIT}")
    return int(raw)


def encode_cursor(page: int) -> str:
    return base64.b64encode(str(page).encode()).decode()


def _page(request: Request) -> int:
    raw = request.query_params.get("cursor")
    if not raw:
        return 1
    try:
        page = int(base64.b64decode(raw, validate=True).decode())
    except (ValueError, binascii.Error) as exc:
        raise _invalid("Invalid cursor") from exc
    if page < 1:
        raise _invalid("Invalid cursor")
    return page


def _paginate(items: list[Any], request: Request) -> tuple[list[Any], str | None]:
    """One page of ``items`` and the cursor of the next page (None on the last)."""
    limit, page = _limit(request), _page(request)
    start = (page - 1) * limit
    more = start + limit < len(items)
    return items[start : start + limit], encode_cursor(page + 1) if more else None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _invalid(f"{name} must be an ISO 8601 date or date-time") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# -- model search ------------------------------------------------------------------------------


def metadata(model: CatalogEntry, run_base: str, cdn_base: str) -> dict[str, Any]:
    """fal's ``metadata`` object for one model: every required key, optional ones only when meaningful."""
    info = model.info
    date = model.date
    result: dict[str, Any] = {
        "display_name": info.display_name,
        "category": info.category,
        "description": info.description,
        "status": info.status,
        "tags": list(info.tags),
        "updated_at": date,
        "is_favorited": None,
        "thumbnail_url": f"{cdn_base}/files/thumbnails/{info.endpoint_id.replace('/', '_')}.jpg",
        "model_url": f"{run_base}/{info.endpoint_id}",
        "license_type": model.license_type,
        "date": date,
        "highlighted": False,
        "kind": info.kind,
        "pinned": False,
    }
    if info.duration_estimate is not None:
        result["duration_estimate"] = info.duration_estimate
    if model.supports_stream:
        result["stream_url"] = f"{run_base}/{info.endpoint_id}/stream"
    if model.related:
        result["inference_endpoint_ids" if info.kind == "training" else "training_endpoint_ids"] = list(model.related)
    return result


def _matches(model: CatalogEntry, words: list[str], category: str | None, status: str | None) -> bool:
    info = model.info
    if category and info.category != category:
        return False
    if status and info.status != status:
        return False
    haystack = " ".join([info.endpoint_id, info.display_name, info.description, info.category, *info.tags]).lower()
    return all(word in haystack for word in words)


async def _search(state: EmulatorState, request: Request) -> JSONResponse:
    ids = _ids(request, required=False)
    expand = _many(request, "expand")
    if unknown := [value for value in expand if value not in EXPANSIONS]:
        raise _invalid(f"Unsupported expand value(s): {', '.join(unknown)}; supported: {', '.join(EXPANSIONS)}")
    status = request.query_params.get("status") or None
    if status not in (None, "active", "deprecated"):
        raise _invalid("status must be 'active' or 'deprecated'")
    words = (request.query_params.get("q") or "").lower().split()
    category = request.query_params.get("category") or None
    models = catalog(state)
    if ids:  # find mode: the requested models, in the order asked; unknown ids are left out
        by_id = {model.info.endpoint_id: model for model in models}
        models = [by_id[i] for i in ids if i in by_id]
    models = [model for model in models if _matches(model, words, category, status)]
    page, next_cursor = _paginate(models, request)
    run_base, cdn_base, origin = (
        state.public_base(request, "run"),
        state.public_base(request, "cdn"),
        state.public_base(request),
    )
    items = []
    for model in page:
        item: dict[str, Any] = {"endpoint_id": model.info.endpoint_id, "metadata": metadata(model, run_base, cdn_base)}
        if "openapi-3.0" in expand:
            item["openapi"] = build_openapi(model, origin)
        if "enterprise_status" in expand:
            item["enterprise_status"] = "ready"
        items.append(item)
    return JSONResponse({"models": items, "next_cursor": next_cursor, "has_more": next_cursor is not None})


# -- pricing -----------------------------------------------------------------------------------


def _price_list(state: EmulatorState) -> dict[str, CatalogEntry]:
    """The listed endpoints that have a price (one without is unknown to pricing, like an unknown id)."""
    return {model.info.endpoint_id: model for model in catalog(state) if model.info.unit_price is not None}


def _priced(state: EmulatorState, ids: Iterable[str]) -> list[CatalogEntry]:
    by_id = _price_list(state)
    if missing := [i for i in ids if i not in by_id]:
        raise PlatformError(404, "not_found", f"Endpoint(s) not found: {', '.join(missing)}")
    return [by_id[i] for i in ids]


async def _pricing(state: EmulatorState, request: Request) -> JSONResponse:
    """Prices of the known ids, in the order asked; unknown ids are left out (like search's find mode),
    and only a batch in which no id is known is a 404."""
    _require_key(state, request)
    ids = _ids(request, required=True)
    by_id = _price_list(state)
    models = [by_id[i] for i in ids if i in by_id]
    if not models:
        raise PlatformError(404, "not_found", f"Endpoint(s) not found: {', '.join(ids)}")
    prices = [
        {"endpoint_id": m.info.endpoint_id, "unit_price": m.info.unit_price, "unit": m.info.unit, "currency": "USD"}
        for m in models
    ]
    return JSONResponse({"prices": prices, "next_cursor": None, "has_more": False})


async def _estimate(state: EmulatorState, request: Request) -> JSONResponse:
    _require_key(state, request)
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise _invalid("Body must be JSON") from exc
    estimate_type = body.get("estimate_type") if isinstance(body, dict) else None
    field = {"historical_api_price": "call_quantity", "unit_price": "unit_quantity"}.get(str(estimate_type))
    endpoints = body.get("endpoints") if isinstance(body, dict) else None
    if field is None:
        raise _invalid("estimate_type must be 'historical_api_price' or 'unit_price'")
    if not isinstance(endpoints, dict) or not endpoints:
        raise _invalid("endpoints must be a non-empty object of endpoint id → quantity")
    if len(endpoints) > MAX_IDS:
        raise _invalid(f"At most {MAX_IDS} endpoints are allowed")
    calls = field == "call_quantity"
    total = 0.0
    for model in _priced(state, list(endpoints)):
        spec = endpoints[model.info.endpoint_id]
        quantity = spec.get(field) if isinstance(spec, dict) else None
        if isinstance(quantity, bool) or not isinstance(quantity, int if calls else int | float) or quantity <= 0:
            kind = "integer" if calls else "number"
            raise _invalid(f"{model.info.endpoint_id}: {field} must be a positive {kind}")
        units = quantity * TYPICAL_UNITS_PER_CALL.get(str(model.info.unit), 1.0) if calls else quantity
        total += (model.info.unit_price or 0.0) * units
    return JSONResponse({"estimate_type": estimate_type, "total_cost": round(total, 6), "currency": "USD"})


# -- request history ---------------------------------------------------------------------------


def _outcome(status_code: int | None) -> str | None:
    """``success`` (2xx), ``user_error`` (4xx), ``error`` (anything else that finished), None while running."""
    if status_code is None:
        return None
    if 200 <= status_code < 300:
        return "success"
    return "user_error" if 400 <= status_code < 500 else "error"


def _duration(record: Any) -> float | None:
    if record.completed_at is None or record.started_at is None:
        return None
    return record.completed_at - record.started_at


def _history_item(record: Any, payloads: bool) -> dict[str, Any]:
    ended = record.completed_at
    started = record.started_at
    duration = _duration(record)
    item: dict[str, Any] = {
        "request_id": record.request_id,
        "endpoint_id": record.endpoint_id,
        # Required by fal's schema: a request still waiting in the queue reports its submit time.
        "started_at": _iso(started if started is not None else record.submitted_at),
        "sent_at": _iso(record.submitted_at),
        "ended_at": _iso(ended),
        "status_code": record.result_status_code if ended is not None else None,
        "duration": round(duration, 3) if duration is not None else None,
    }
    options = getattr(record, "options", None)
    if payloads and getattr(options, "store_io", True):  # X-Fal-Store-IO: 0 → fal kept no payloads
        item["json_input"] = record.input
        item["json_output"] = record.result_body if ended is not None else None
    return item


def _listed(state: EmulatorState, record: Any, now: float) -> bool:
    """Whether history shows ``record`` yet: always, or (``history_lag_seconds`` set) once it has finished
    and the lag has passed — queued and running requests are not listed."""
    lag = state.config.history_lag_seconds
    if lag is None:
        return True
    return record.completed_at is not None and record.completed_at + state.config.scaled(lag) <= now


async def _history(state: EmulatorState, request: Request) -> JSONResponse:
    _require_key(state, request)
    ids = _ids(request, required=True)
    request_id = request.query_params.get("request_id") or None
    status = request.query_params.get("status") or None
    if status not in (None, "success", "error", "user_error"):
        raise _invalid("status must be 'success', 'error' or 'user_error'")
    sort_by = request.query_params.get("sort_by") or "ended_at"
    if sort_by not in ("ended_at", "duration"):
        raise _invalid("sort_by must be 'ended_at' or 'duration'")
    expand = _many(request, "expand")
    if unknown := [value for value in expand if value != "payloads"]:
        raise _invalid(f"Unsupported expand value(s): {', '.join(unknown)}; supported: payloads")
    now = time.time()
    default_window = timedelta(days=90 if request_id else 1).total_seconds()
    start = _parse_time(request, "start")
    end = _parse_time(request, "end")
    start = now - default_window if start is None else start
    end = now + 1.0 if end is None else end  # "now", with room for clock granularity
    records = [
        record
        for endpoint_id in ids
        for record in state.queue.requests_for(endpoint_id)
        if _listed(state, record, now)
        and start <= record.submitted_at < end
        and (request_id is None or record.request_id == request_id)
        and (
            status is None or _outcome(record.result_status_code if record.completed_at is not None else None) == status
        )
    ]
    if sort_by == "duration":
        records.sort(key=lambda r: (_duration(r) is None, -(_duration(r) or 0.0)))
    else:  # newest first; still running (no end yet) before everything finished
        records.sort(key=lambda r: (r.completed_at is not None, -(r.completed_at or 0), -r.submitted_at))
    page, next_cursor = _paginate(records, request)
    items = [_history_item(record, "payloads" in expand) for record in page]
    return JSONResponse({"items": items, "next_cursor": next_cursor, "has_more": next_cursor is not None})


def routes(state: EmulatorState) -> list[BaseRoute]:
    """The Platform API under ``/platform`` (fal's ``https://api.fal.ai/v1``)."""

    def endpoint(handler: Any) -> Any:
        async def wrapped(request: Request) -> JSONResponse:
            try:
                return await handler(state, request)
            except PlatformError as exc:
                return exc.response()

        return wrapped

    async def meta(state: EmulatorState, request: Request) -> JSONResponse:
        return JSONResponse({"webhook_ip_ranges": WEBHOOK_IP_RANGES})

    return [
        Route("/models", endpoint(_search), methods=["GET"]),
        Route("/models/pricing", endpoint(_pricing), methods=["GET"]),
        Route("/models/pricing/estimate", endpoint(_estimate), methods=["POST"]),
        Route("/models/requests/by-endpoint", endpoint(_history), methods=["GET"]),
        Route("/meta", endpoint(meta), methods=["GET"]),
    ]
