"""Per-model OpenAPI documents over real HTTP: fal's own for real endpoints, fal's shape for the emulator's."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest

from fal_mcp.emulator.catalog import load_dir
from fal_mcp.emulator.openapi import schema_prefix
from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import MakeEmulator, client_for
from tests.realdata import openapi_doc, openapi_index, shared_data

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


async def test_every_real_endpoint_serves_fals_own_document(anonymous: httpx2.AsyncClient) -> None:
    for entry in openapi_index():
        endpoint = entry["endpoint_id"]
        short = await anonymous.get("/openapi", params={"endpoint_id": endpoint})
        long = await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": endpoint})
        assert short.status_code == long.status_code == 200, endpoint
        assert short.json() == long.json() == openapi_doc(endpoint), endpoint


async def test_the_emulators_own_model_gets_a_document_in_fals_shape(
    anonymous: httpx2.AsyncClient, emulator: EmulatorServer
) -> None:
    """``emulator/strict`` has no fal document: one is built in the layout of fal's (compared with a real one)."""
    response = await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": "emulator/strict"})
    assert response.status_code == 200, response.text
    doc = response.json()
    real = openapi_doc("fal-ai/flux/dev")
    assert list(doc) == list(real)
    assert doc["openapi"] == real["openapi"] and doc["servers"] == real["servers"]
    assert doc["security"] == real["security"]
    assert doc["components"]["securitySchemes"] == real["components"]["securitySchemes"]
    assert doc["components"]["schemas"]["QueueStatus"] == real["components"]["schemas"]["QueueStatus"]
    assert doc["info"]["title"] == "Queue OpenAPI for emulator/strict"
    meta = doc["info"]["x-fal-metadata"]
    assert meta["endpointId"] == "emulator/strict" and meta["thumbnailUrl"].startswith(emulator.base_url)
    requests = "/emulator/strict/requests/{request_id}"
    assert list(doc["paths"]) == [f"{requests}/status", f"{requests}/cancel", "/emulator/strict", requests]
    assert [list(item) for item in doc["paths"].values()] == [list(item) for item in real["paths"].values()]
    schemas = doc["components"]["schemas"]
    submit = doc["paths"]["/emulator/strict"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StrictInput"
    }
    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    validator = jsonschema.Draft7Validator({**schemas["StrictInput"], "components": doc["components"]})
    assert validator.is_valid({"prompt": "a cat"}) and not validator.is_valid({"prompt": "a"})


async def test_any_real_document_dropped_into_a_catalog_dir_is_served(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    """The rule, not the instance: a document the project has never seen (here: a real one under a new id,
    gzipped, beside a file that is no document) is listed, priced as unknown, served verbatim, and refused
    at submit with a clear reason."""
    unseen = openapi_doc("fal-ai/veo3")
    text = json.dumps(unseen).replace("fal-ai/veo3", "acme/veo-clone")
    (tmp_path / "acme__veo-clone.json.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "index.json").write_text("[]")
    server = make_emulator(catalog_dirs=(str(tmp_path / "missing"), str(tmp_path)))  # a missing dir is skipped
    async with client_for(server) as http:
        served = await http.get("/openapi", params={"endpoint_id": "acme/veo-clone"})
        assert served.status_code == 200 and served.json() == json.loads(text)
        listed = (await http.get("/platform/models", params={"endpoint_id": "acme/veo-clone"})).json()["models"]
        (model,) = listed
        assert model["metadata"]["category"] == "video" or model["metadata"]["category"].endswith("video")
        assert "catalog-only" in model["metadata"]["tags"]
        assert model["metadata"]["description"].startswith("[Not runnable in the offline emulator")
        priced = await http.get("/platform/models/pricing", params={"endpoint_id": "acme/veo-clone"})
        assert priced.status_code == 404  # no price known: left out, like an unknown id
        refused = await http.post("/queue/acme/veo-clone", json={"prompt": "a fox"})
        assert refused.status_code == 404
        assert refused.json()["detail"].startswith("acme/veo-clone is not runnable in the offline emulator")
        assert "fal-ai/flux/dev" in refused.json()["detail"]
    assert not server.state.submissions  # refused before anything was queued


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


def test_every_real_document_is_understood_as_it_comes() -> None:
    """The shared originals (plain JSON, beside an index.json that is no document) load as they are: each
    endpoint's id, its input schema (usable by a validator) and its output schema."""
    loaded = load_dir(shared_data() / "fal-openapi")
    assert set(loaded) == {entry["endpoint_id"] for entry in openapi_index()}
    for endpoint_id, document in loaded.items():
        assert document.input_schema.get("type") == "object", endpoint_id
        jsonschema.Draft7Validator.check_schema(document.input_schema)
        assert isinstance(document.output_schema, dict), endpoint_id
