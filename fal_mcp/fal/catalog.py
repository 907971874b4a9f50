"""fal's model catalog: search, one model's metadata, its input/output schemas, prices and cost estimates.

Sources (fal-protocol.md §8): the Platform API ``GET {platform}/models`` (key optional), its pricing
endpoints (key required) and the per-model OpenAPI document (public). Everything is cached
(:mod:`fal_mcp.fal.cache`), so a repeat lookup — in this process or after a restart — costs no request.
Without a key, search and schemas work and prices are simply unknown.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from fal_mcp.fal._http import FalHTTP
from fal_mcp.fal.cache import TTLCache
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import (
    AuthenticationError,
    BadRequestError,
    FalAPIError,
    FalConnectionError,
    FalError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from fal_mcp.fal.retry import RetryMode
from fal_mcp.fal.schemas import OpenAPIError, ResolvedSchemas, resolve_openapi
from fal_mcp.log import get_logger

log = get_logger(__name__)

PRICES_PER_CALL: Final = 50  # the pricing endpoint takes 1–50 endpoint ids
MAX_PRICE_PAGES: Final = 10
DESCRIPTION_MAX_CHARS: Final = 240
NO_KEY_NOTE: Final = "prices are unknown without a fal key (set FAL_KEY)"

EstimateType = Literal["unit_price", "historical_api_price"]


class Price(BaseModel):
    model_config = ConfigDict(frozen=True)

    unit_price: float
    unit: str | None = None
    currency: str = "USD"


class ModelSummary(BaseModel):
    """One model as search lists it; prices are ``None`` when unknown (e.g. without a key)."""

    endpoint_id: str
    display_name: str
    category: str | None = None
    description: str = ""
    status: str | None = None
    tags: list[str] = Field(default_factory=list)
    kind: str | None = None
    unit_price: float | None = None
    unit: str | None = None
    currency: str | None = None


class ModelPage(BaseModel):
    models: list[ModelSummary]
    next_cursor: str | None = None
    has_more: bool = False


class ModelSchema(BaseModel):
    """What a caller needs to call a model: plain JSON Schemas, the file fields and an example."""

    endpoint_id: str
    display_name: str
    category: str | None = None
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    file_fields: list[str] = Field(default_factory=list)
    example_input: dict[str, Any] = Field(default_factory=dict)
    unit_price: float | None = None
    unit: str | None = None
    currency: str | None = None


class CostEstimate(BaseModel):
    """``source``: ``api`` (fal's estimate endpoint), ``local`` (unit price × quantity) or ``unknown``."""

    total_cost: float | None
    currency: str | None = None
    estimate_type: EstimateType
    source: Literal["api", "local", "unknown"]
    note: str | None = None


def one_line(text: str | None, limit: int = DESCRIPTION_MAX_CHARS) -> str:
    """Whitespace collapsed to one line, cut at a word boundary with an ellipsis."""
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0] or flat[: limit - 1]
    return cut.rstrip(" ,;:.") + "…"


def local_estimate(
    price: Price | None, *, unit_quantity: float | None = None, call_quantity: float | None = None
) -> CostEstimate:
    """Unit price × quantity, for when fal's estimate endpoint is unavailable.

    For ``call_quantity`` this assumes one billing unit per call, which is exact for per-request/per-image
    models and a lower bound for per-second/per-megapixel ones; the note says so.
    """
    estimate_type: EstimateType = "unit_price" if unit_quantity is not None else "historical_api_price"
    if price is None:
        return CostEstimate(total_cost=None, estimate_type=estimate_type, source="unknown", note="no unit price known")
    quantity = unit_quantity if unit_quantity is not None else (call_quantity if call_quantity is not None else 1)
    note = f"{quantity:g} × {price.unit_price:g} {price.currency} per {price.unit or 'unit'}"
    if unit_quantity is None:
        note += "; assumes one billing unit per call"
    return CostEstimate(
        total_cost=round(price.unit_price * quantity, 6),
        currency=price.currency,
        estimate_type=estimate_type,
        source="local",
        note=note,
    )


def not_found(endpoint_id: str) -> NotFoundError:
    return NotFoundError(
        f"no model '{endpoint_id}' on fal; use model_search to find the right endpoint id", status_code=404
    )


class CatalogAPI:
    """Search, metadata, schemas and prices, cached in memory and (with ``cache_dir``) on disk."""

    def __init__(
        self,
        http: FalHTTP,
        cache_dir: Path | None,
        *,
        ttls: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        cache: TTLCache | None = None,
    ) -> None:
        self._http = http
        self.cache = cache or TTLCache(cache_dir, ttls=ttls, clock=clock)
        # Entries from another fal (the emulator, a proxy) must never answer for this one.
        self._scope = [http.hosts.platform, http.hosts.openapi]

    @property
    def has_key(self) -> bool:
        return self._http.credentials is not None

    # -- search and metadata ----------------------------------------------------------------------

    async def search(
        self,
        query: str | None = None,
        category: str | None = None,
        status: Literal["active", "deprecated"] | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> ModelPage:
        params = {"q": query or None, "category": category or None, "status": status, "limit": limit, "cursor": cursor}
        params = {k: v for k, v in params.items() if v is not None}

        async def fetch() -> dict[str, Any]:
            body = await self._platform_get("models", params)
            models = [_summary(m).model_dump() for m in _models_of(body)]
            return {
                "models": models,
                "next_cursor": body.get("next_cursor") if isinstance(body, Mapping) else None,
                "has_more": bool(body.get("has_more")) if isinstance(body, Mapping) else False,
            }

        raw = await self.cache.get_or_fetch("search", [*self._scope, sorted(params.items())], fetch)
        page = ModelPage.model_validate(raw)
        prices = await self.prices([m.endpoint_id for m in page.models])
        page.models = [_with_price(m, prices.get(m.endpoint_id)) for m in page.models]
        return page

    async def get_model(self, endpoint_id: str) -> ModelSummary:
        """One model's metadata (Platform API find mode); :class:`NotFoundError` when fal has no such model."""
        endpoint_id = str(EndpointId.parse(endpoint_id))
        summary = ModelSummary.model_validate(await self._model_metadata(endpoint_id))
        return _with_price(summary, (await self.prices([endpoint_id])).get(endpoint_id))

    async def _model_metadata(self, endpoint_id: str) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            try:
                body = await self._platform_get("models", {"endpoint_id": endpoint_id})
            except NotFoundError:
                raise not_found(endpoint_id) from None
            for model in _models_of(body):
                if model.get("endpoint_id") == endpoint_id:
                    return _summary(model).model_dump()
            raise not_found(endpoint_id)

        return await self.cache.get_or_fetch("model", [*self._scope, endpoint_id], fetch)

    # -- schemas ----------------------------------------------------------------------------------

    async def get_schema(self, endpoint_id: str) -> ModelSchema:
        """The model's resolved input/output JSON Schemas, file fields, example input and price."""
        endpoint_id = str(EndpointId.parse(endpoint_id))
        raw = await self.cache.get_or_fetch("schema", [*self._scope, endpoint_id], lambda: self._build(endpoint_id))
        schema = ModelSchema.model_validate(raw)
        price = (await self.prices([endpoint_id])).get(endpoint_id)
        if price is not None:
            schema = schema.model_copy(update=price.model_dump())
        return schema

    async def _build(self, endpoint_id: str) -> dict[str, Any]:
        """OpenAPI document and metadata fetched side by side; the Platform API's ``expand`` as fallback."""
        outcome: dict[str, Any] = {}

        async def attempt(name: str, call: Callable[[], Any]) -> None:
            try:
                outcome[name] = await call()
            except Exception as exc:  # judged below, so one failure never cancels the other lookup
                outcome[name] = exc

        async with anyio.create_task_group() as group:
            group.start_soon(attempt, "doc", lambda: self._openapi_document(endpoint_id))
            group.start_soon(attempt, "meta", lambda: self._model_metadata(endpoint_id))

        doc, meta = outcome["doc"], outcome["meta"]
        for value in (doc, meta):
            if isinstance(value, Exception) and not isinstance(value, FalError):
                raise value  # a bug, not an answer from fal
        if isinstance(doc, NotFoundError) and isinstance(meta, NotFoundError):
            raise not_found(endpoint_id)
        resolved: ResolvedSchemas | None = None
        if isinstance(doc, Mapping):
            try:
                resolved = resolve_openapi(doc, endpoint_id)
            except OpenAPIError as exc:
                doc = exc
        if resolved is None:
            log.info("fal.catalog.openapi_fallback", endpoint_id=endpoint_id, reason=str(doc))
            resolved, expanded_meta = await self._expanded(endpoint_id)
            if not isinstance(meta, dict):
                meta = expanded_meta
        if not isinstance(meta, dict):
            # The schema exists but the metadata lookup failed: fall back to the document's own metadata.
            meta = {"display_name": endpoint_id, "category": resolved.metadata.get("category")}
        return ModelSchema(
            endpoint_id=endpoint_id,
            display_name=meta.get("display_name") or endpoint_id,
            category=meta.get("category") or resolved.metadata.get("category"),
            description=meta.get("description") or "",
            input_schema=resolved.input_schema,
            output_schema=resolved.output_schema,
            file_fields=resolved.file_fields,
            example_input=resolved.example_input,
        ).model_dump()

    async def _openapi_document(self, endpoint_id: str) -> Mapping[str, Any]:
        body = await self._http.request_json(
            "GET",
            self._http.url("openapi"),
            params={"endpoint_id": endpoint_id},
            mode=RetryMode.IDEMPOTENT,
            auth="none",
        )
        if not isinstance(body, Mapping):
            raise OpenAPIError(f"fal's OpenAPI document for {endpoint_id!r} is not a JSON object")
        return body

    async def _expanded(self, endpoint_id: str) -> tuple[ResolvedSchemas, dict[str, Any]]:
        """``GET {platform}/models?endpoint_id=…&expand=openapi-3.0``: metadata and OpenAPI in one answer."""
        try:
            body = await self._platform_get("models", {"endpoint_id": endpoint_id, "expand": "openapi-3.0"})
        except NotFoundError:
            raise not_found(endpoint_id) from None
        model = next((m for m in _models_of(body) if m.get("endpoint_id") == endpoint_id), None)
        if model is None:
            raise not_found(endpoint_id)
        openapi = model.get("openapi")
        if not isinstance(openapi, Mapping) or "error" in openapi:
            raise OpenAPIError(f"fal has no usable OpenAPI document for {endpoint_id!r}")
        return resolve_openapi(openapi, endpoint_id), _summary(model).model_dump()

    # -- prices -----------------------------------------------------------------------------------

    async def prices(self, endpoint_ids: list[str]) -> dict[str, Price | None]:
        """Unit prices by endpoint id (``None``: unknown). Needs a key; without one, all are unknown."""
        ids = list(dict.fromkeys(endpoint_ids))
        if not ids or not self.has_key:
            return dict.fromkeys(ids)
        scope = [*self._scope, self._account()]
        result: dict[str, Price | None] = {}
        missing: list[str] = []
        for endpoint_id in ids:
            cached = await self.cache.get("price", [*scope, endpoint_id])
            if isinstance(cached, dict):
                result[endpoint_id] = Price.model_validate(cached["price"]) if cached.get("price") else None
            else:
                missing.append(endpoint_id)
        for start in range(0, len(missing), PRICES_PER_CALL):
            batch = sorted(missing[start : start + PRICES_PER_CALL])
            fetched = await self._batch_prices(scope, batch)
            for endpoint_id in batch:
                price = fetched.get(endpoint_id)
                result[endpoint_id] = Price.model_validate(price) if price else None
        return {endpoint_id: result.get(endpoint_id) for endpoint_id in ids}

    async def _batch_prices(self, scope: list[Any], batch: list[str]) -> dict[str, Any]:
        """One batch's prices. When fal refuses the batch for what is in it (a 4xx: e.g. one unknown or
        retired id), each id is asked alone, so one bad id never blanks the others' prices (and cost checks).
        An outage (5xx, no connection), a bad key or a rate limit leaves the batch unknown: asking again
        per id could not help."""
        try:
            return await self.cache.coalesce(["prices", *scope, batch], lambda: self._fetch_prices(batch))
        except (AuthenticationError, PermissionDeniedError, RateLimitError, ServerError, FalConnectionError) as exc:
            log.info("fal.catalog.prices_unavailable", error=str(exc), count=len(batch))
            return {}
        except FalAPIError as exc:
            if len(batch) == 1:
                log.info("fal.catalog.price_refused", endpoint_id=batch[0], error=str(exc))
                await self.cache.set("price", [*scope, batch[0]], {"price": None})
                return {}
            log.info("fal.catalog.prices_per_id", error=str(exc), count=len(batch))
        found: dict[str, Any] = {}
        limiter = anyio.CapacityLimiter(8)

        async def one(endpoint_id: str) -> None:
            async with limiter:
                found.update(await self._batch_prices(scope, [endpoint_id]))

        async with anyio.create_task_group() as group:
            for endpoint_id in batch:
                group.start_soon(one, endpoint_id)
        return found

    async def _fetch_prices(self, batch: list[str]) -> dict[str, Any]:
        """One pricing lookup for ≤50 ids; every id gets a cache entry, ``None`` when fal lists no price."""
        found: dict[str, Any] = {}
        params: list[tuple[str, Any]] = [("endpoint_id", endpoint_id) for endpoint_id in batch]
        cursor: str | None = None
        for _ in range(MAX_PRICE_PAGES):
            body = await self._http.request_json(
                "GET",
                self._http.url("platform", "models/pricing"),
                params=[*params, ("cursor", cursor)] if cursor else params,
                mode=RetryMode.IDEMPOTENT,
                auth="key",
            )
            for item in (body or {}).get("prices") or []:
                if isinstance(item, Mapping) and isinstance(item.get("unit_price"), (int, float)):
                    found[str(item.get("endpoint_id"))] = Price(
                        unit_price=float(item["unit_price"]),
                        unit=item.get("unit"),
                        currency=item.get("currency") or "USD",
                    ).model_dump()
            cursor = body.get("next_cursor") if isinstance(body, Mapping) and body.get("has_more") else None
            if not cursor:
                break
        scope = [*self._scope, self._account()]
        for endpoint_id in batch:
            await self.cache.set("price", [*scope, endpoint_id], {"price": found.get(endpoint_id)})
        return found

    async def estimate_cost(
        self, endpoint_id: str, *, unit_quantity: float | None = None, call_quantity: float | None = None
    ) -> CostEstimate:
        """fal's own estimate (``POST {platform}/models/pricing/estimate``), else a local one from the unit price.

        ``unit_quantity`` → ``unit_price`` estimate (units × price); ``call_quantity`` (default 1) →
        ``historical_api_price`` (fal's average cost per call). Without a key: unknown, not an error.
        """
        if unit_quantity is not None and call_quantity is not None:
            raise ValueError("give unit_quantity or call_quantity, not both")
        endpoint_id = str(EndpointId.parse(endpoint_id))
        if unit_quantity is None and call_quantity is None:
            call_quantity = 1
        estimate_type: EstimateType = "unit_price" if unit_quantity is not None else "historical_api_price"
        if not self.has_key:
            return CostEstimate(total_cost=None, estimate_type=estimate_type, source="unknown", note=NO_KEY_NOTE)
        quantity = {"unit_quantity": unit_quantity} if unit_quantity is not None else {"call_quantity": call_quantity}
        try:
            body = await self._http.request_json(
                "POST",
                self._http.url("platform", "models/pricing/estimate"),
                json_body={"estimate_type": estimate_type, "endpoints": {endpoint_id: quantity}},
                mode=RetryMode.IDEMPOTENT,
                auth="key",
            )
            return CostEstimate(
                total_cost=float(body["total_cost"]),
                currency=body.get("currency") or "USD",
                estimate_type=body.get("estimate_type") or estimate_type,
                source="api",
            )
        except NotFoundError:
            raise not_found(endpoint_id) from None
        except (BadRequestError, ValidationError):
            raise
        except (FalAPIError, FalConnectionError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
                log.info("fal.catalog.estimate_forbidden", error=str(exc))
            else:
                log.info("fal.catalog.estimate_unavailable", error=str(exc))
        price = (await self.prices([endpoint_id])).get(endpoint_id)
        estimate = local_estimate(price, unit_quantity=unit_quantity, call_quantity=call_quantity)
        if estimate.source == "unknown":
            estimate.note = "fal's estimate is unavailable and no unit price is known"
        return estimate

    # -- helpers ----------------------------------------------------------------------------------

    async def _platform_get(self, path: str, params: Mapping[str, Any]) -> Any:
        return await self._http.request_json(
            "GET", self._http.url("platform", path), params=params, mode=RetryMode.IDEMPOTENT, auth="optional"
        )

    def _account(self) -> str:
        """Prices may differ per account: key them by a one-way hash of the key, never the key itself."""
        credentials = self._http.credentials
        if credentials is None:
            return "anonymous"
        return hashlib.sha256(credentials.authorization().encode("utf-8")).hexdigest()[:32]


def _models_of(body: Any) -> list[Mapping[str, Any]]:
    models = body.get("models") if isinstance(body, Mapping) else None
    return [m for m in models or [] if isinstance(m, Mapping) and isinstance(m.get("endpoint_id"), str)]


def _summary(model: Mapping[str, Any]) -> ModelSummary:
    metadata = model.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    endpoint_id = str(model["endpoint_id"])
    tags = meta.get("tags")
    return ModelSummary(
        endpoint_id=endpoint_id,
        display_name=str(meta.get("display_name") or endpoint_id),
        category=meta.get("category"),
        description=one_line(meta.get("description")),
        status=meta.get("status"),
        tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        kind=meta.get("kind"),
    )


def _with_price(summary: ModelSummary, price: Price | None) -> ModelSummary:
    if price is None:
        return summary
    return summary.model_copy(update=price.model_dump())
