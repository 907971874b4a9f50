"""Per-model OpenAPI documents over real HTTP, in fal's exact shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import jsonschema
import pytest

from fal_mcp.emulator.openapi import schema_prefix
from fal_mcp.emulator.server import EmulatorServer

pytestmark = pytest.mark.anyio


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


@pytest.fixture
async def anonymous(emulator: EmulatorServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=emulator.base_url) as http:  # public: no key
        yield http


async def test_flux_dev_document_has_fals_shape(anonymous: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    response = await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux/dev"})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert list(doc) == ["openapi", "info", "components", "paths", "servers", "security"]
    assert doc["openapi"] == "3.0.4"
    assert doc["info"]["title"] == "Queue OpenAPI for fal-ai/flux/dev"
    assert doc["info"]["version"] == "1.0.0"
    meta = doc["info"]["x-fal-metadata"]
    assert meta["endpointId"] == "fal-ai/flux/dev" and meta["category"] == "text-to-image"
    assert meta["playgroundUrl"] == "https://fal.ai/models/fal-ai/flux/dev"
    assert meta["documentationUrl"] == "https://fal.ai/models/fal-ai/flux/dev/api"
    assert meta["thumbnailUrl"].startswith(emulator.base_url)
    assert doc["servers"] == [{"url": "https://queue.fal.run"}]
    assert doc["security"] == [{"apiKeyAuth": []}]
    assert doc["components"]["securitySchemes"] == {
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Fal Key"}
    }
    schemas = doc["components"]["schemas"]
    assert {"QueueStatus", "FluxDevInput", "FluxDevOutput", "Image", "ImageSize"} <= schemas.keys()
    assert schemas["QueueStatus"]["required"] == ["status", "request_id"]
    assert schemas["FluxDevInput"]["x-fal-order-properties"][0] == "prompt"
    assert schemas["FluxDevInput"]["required"] == ["prompt"]

    requests = "/fal-ai/flux/dev/requests/{request_id}"
    assert list(doc["paths"]) == [f"{requests}/status", f"{requests}/cancel", "/fal-ai/flux/dev", requests]
    submit = doc["paths"]["/fal-ai/flux/dev"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FluxDevInput"
    }
    status = doc["paths"][f"{requests}/status"]["get"]
    assert [p["name"] for p in status["parameters"]] == ["request_id", "logs"]
    assert list(doc["paths"][f"{requests}/cancel"]) == ["put"]
    result = doc["paths"][requests]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert result == {"$ref": "#/components/schemas/FluxDevOutput"}
    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref

    # The input schema is usable as is: a valid and an invalid input, refs resolved within the document.
    validator = jsonschema.Draft7Validator({**schemas["FluxDevInput"], "components": doc["components"]})
    assert validator.is_valid({"prompt": "a cat", "image_size": {"width": 512, "height": 512}})
    assert not validator.is_valid({"prompt": "a cat", "image_size": "gigantic"})
    assert not validator.is_valid({"image_size": "square"})


async def test_both_urls_and_catalog_only_models(anonymous: httpx2.AsyncClient) -> None:
    endpoint = "fal-ai/kling-video/v2.1/pro/image-to-video"
    short = await anonymous.get("/openapi", params={"endpoint_id": endpoint})
    long = await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": endpoint})
    assert short.status_code == long.status_code == 200
    assert short.json() == long.json()
    schemas = short.json()["components"]["schemas"]
    assert {"KlingVideoV21ProImageToVideoInput", "KlingVideoV21ProImageToVideoOutput", "File"} <= schemas.keys()
    for ref in refs(short.json()):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_unknown_or_missing_endpoint(anonymous: httpx2.AsyncClient) -> None:
    unknown = await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/unknown-model"})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Endpoint fal-ai/unknown-model not found"}
    missing = await anonymous.get("/openapi/queue/openapi.json")
    assert missing.status_code == 400
    assert "endpoint_id" in missing.json()["detail"]


def test_schema_names_drop_the_owner() -> None:
    assert schema_prefix("fal-ai/bytedance/seedream/v4/text-to-image") == "BytedanceSeedreamV4TextToImage"
    assert schema_prefix("alibaba/happy-horse/image-to-video") == "HappyHorseImageToVideo"
    assert schema_prefix("fal-ai/flux-pro/v1.1-ultra") == "FluxProV11Ultra"
    assert schema_prefix("fal-ai/hunyuan3d-v21") == "Hunyuan3dV21"
