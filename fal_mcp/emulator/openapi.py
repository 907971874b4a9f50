"""Per-model OpenAPI documents (``fal.ai/api/openapi/queue/openapi.json?endpoint_id=…``).

A real endpoint's document is fal's own, served verbatim (``catalog.py``). For the emulator's own
models (``emulator/…``) one is built in fal's layout, key order and wording: ``QueueStatus`` plus
``<Pascal(id)>Input``/``Output`` (the id without its owner: ``fal-ai/flux/dev`` → ``FluxDev``) and the
submit / status / cancel / result paths. ``servers`` names fal's real queue host, as fal's documents do.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.emulator.catalog import CatalogEntry, find
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import InvalidEndpointIdError

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

QUEUE_SERVER = "https://queue.fal.run"

QUEUE_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
        "request_id": {"type": "string", "description": "The request id."},
        "response_url": {"type": "string", "description": "The response url."},
        "status_url": {"type": "string", "description": "The status url."},
        "cancel_url": {"type": "string", "description": "The cancel url."},
        "logs": {"type": "object", "description": "The logs.", "additionalProperties": True},
        "metrics": {"type": "object", "description": "The metrics.", "additionalProperties": True},
        "queue_position": {"type": "integer", "description": "The queue position."},
    },
    "required": ["status", "request_id"],
}


def schema_prefix(endpoint_id: str) -> str:
    """``fal-ai/bytedance/seedream/v4/text-to-image`` → ``BytedanceSeedreamV4TextToImage`` (owner dropped)."""
    try:
        parsed = EndpointId.parse(endpoint_id)
        rest = f"{parsed.alias}/{parsed.path}" if parsed.path else parsed.alias
    except InvalidEndpointIdError:
        rest = endpoint_id
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", rest) if word)


def _with_order(schema: dict[str, Any], title: str) -> dict[str, Any]:
    """fal's schemas carry ``x-fal-order-properties`` and a ``title``; add them when a model left them out."""
    result = copy.deepcopy(schema)
    if "properties" in result:
        result.setdefault("x-fal-order-properties", list(result["properties"]))
    result.setdefault("title", title)
    return result


def _request_id_param() -> dict[str, Any]:
    return {
        "name": "request_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "description": "Request ID"},
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def build_openapi(model: CatalogEntry, base: str | None = None) -> dict[str, Any]:
    """The queue OpenAPI document of a catalog entry: fal's own when there is one, else built.

    ``base`` (this emulator's origin) only shapes a built document's ``thumbnailUrl``; playground and
    documentation links stay fal's, since they are documentation, not API.
    """
    if model.document is not None:
        return copy.deepcopy(dict(model.document.document))
    endpoint_id = model.info.endpoint_id
    prefix = schema_prefix(endpoint_id)
    input_name, output_name = f"{prefix}Input", f"{prefix}Output"
    thumbnail_host = f"{base.rstrip('/')}/cdn" if base else "https://v3.fal.media"
    metadata = {
        "endpointId": endpoint_id,
        "category": model.info.category,
        "thumbnailUrl": f"{thumbnail_host}/files/thumbnails/{prefix}.jpg",
        "playgroundUrl": f"https://fal.ai/models/{endpoint_id}",
        "documentationUrl": f"https://fal.ai/models/{endpoint_id}/api",
    }
    schemas: dict[str, Any] = {
        "QueueStatus": copy.deepcopy(QUEUE_STATUS),
        input_name: _with_order(model.input_schema, input_name),
        output_name: _with_order(model.output_schema, output_name),
        **copy.deepcopy(model.components),
    }
    queue_status = {"$ref": "#/components/schemas/QueueStatus"}
    logs_param = {
        "name": "logs",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "description": "Whether to include logs (`1`) in the response or not (`0`)."},
    }
    cancelled = {
        "type": "object",
        "properties": {
            "success": {"type": "boolean", "description": "Whether the request was cancelled successfully."}
        },
    }
    requests = f"/{endpoint_id}/requests/{{request_id}}"
    paths = {
        f"{requests}/status": {
            "get": {
                "parameters": [_request_id_param(), logs_param],
                "responses": {"200": {"description": "The request status.", "content": _json(queue_status)}},
            }
        },
        f"{requests}/cancel": {
            "put": {
                "parameters": [_request_id_param()],
                "responses": {"200": {"description": "The request was cancelled.", "content": _json(cancelled)}},
            }
        },
        f"/{endpoint_id}": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": f"#/components/schemas/{input_name}"}),
                },
                "responses": {"200": {"description": "The request status.", "content": _json(queue_status)}},
            }
        },
        requests: {
            "get": {
                "parameters": [_request_id_param()],
                "responses": {
                    "200": {
                        "description": "Result of the request.",
                        "content": _json({"$ref": f"#/components/schemas/{output_name}"}),
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.0.4",
        "info": {
            "title": f"Queue OpenAPI for {endpoint_id}",
            "version": "1.0.0",
            "description": f"The OpenAPI schema for the {endpoint_id} queue.",
            "x-fal-metadata": metadata,
        },
        "components": {
            "securitySchemes": {
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Fal Key"}
            },
            "schemas": schemas,
        },
        "paths": paths,
        "servers": [{"url": QUEUE_SERVER}],
        "security": [{"apiKeyAuth": []}],
    }


def routes(state: EmulatorState) -> list[BaseRoute]:
    """``GET ?endpoint_id=<id>`` at ``/`` and ``/queue/openapi.json`` (public; no key needed)."""

    async def document(request: Request) -> JSONResponse:
        endpoint_id = request.query_params.get("endpoint_id", "").strip()
        if not endpoint_id:
            return JSONResponse({"detail": "Missing required query parameter: endpoint_id"}, status_code=400)
        model = find(state, endpoint_id)
        if model is None:
            return JSONResponse({"detail": f"Endpoint {endpoint_id} not found"}, status_code=404)
        return JSONResponse(build_openapi(model, state.public_base(request)))

    return [Route("/", document, methods=["GET"]), Route("/queue/openapi.json", document, methods=["GET"])]
