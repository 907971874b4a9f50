"""The emulated Platform API (api.fal.ai/v1) over real HTTP: search, pricing, estimates, meta, request history."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest

from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import MakeEmulator, client_for, submit, wait_completed
from tests.realdata import openapi_doc as openapi_document
from tests.realdata import openapi_index, real_prices

pytestmark = pytest.mark.anyio

REQUIRED_METADATA = {
    "display_name",
    "category",
    "description",
    "status",
    "tags",
    "updated_at",
    "is_favorited",
    "thumbnail_url",
    "model_url",
    "date",
    "highlighted",
    "pinned",
}


async def models(http: httpx2.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/platform/models", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def all_models(http: httpx2.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of a search."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await models(http, limit=100, **params, **({"cursor": cursor} if cursor else {}))
        found += page["models"]
        if not page["has_more"]:
            return found
        cursor = page["next_cursor"]


async def test_search_lists_every_real_document_and_fills_every_required_field(emulator: EmulatorServer) -> None:
    async with httpx2.AsyncClient(base_url=emulator.base_url) as anonymous:
        listed = await all_models(anonymous)
    ids = [m["endpoint_id"] for m in listed]
    real = {entry["endpoint_id"] for entry in openapi_index()}
    own = {model.info.endpoint_id for model in emulator.state.models.all() if model.info.endpoint_id not in real}
    assert len(ids) == len(set(ids)) and set(ids) == real | own
    assert own == {"emulator/slow", "emulator/strict"}  # the emulator's own test models; every other id is fal's
    for model in listed:
        assert model["metadata"].keys() >= REQUIRED_METADATA, model["endpoint_id"]
        assert "emulated" in model["metadata"]["tags"]
    flux = next(m for m in listed if m["endpoint_id"] == "fal-ai/flux/dev")
    assert flux["metadata"]["model_url"] == f"{emulator.base_url}/run/fal-ai/flux/dev"
    assert "openapi" not in flux
    trainer = next(m for m in listed if m["endpoint_id"] == "fal-ai/flux-lora-fast-training")
    assert trainer["metadata"]["kind"] == "training"
    assert trainer["metadata"]["inference_endpoint_ids"] == ["fal-ai/flux-lora"]


async def test_models_that_cannot_run_offline_are_marked(client: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    listed = await all_models(client)
    runnable = {m.info.endpoint_id for m in emulator.state.models.all()}
    for model in listed:
        tags, description = model["metadata"]["tags"], model["metadata"]["description"]
        if model["endpoint_id"] in runnable:
            assert "runs-offline" in tags and "catalog-only" not in tags, model["endpoint_id"]
            assert "not runnable" not in description.lower()
        else:
            assert "catalog-only" in tags and "runs-offline" not in tags, model["endpoint_id"]
            assert description.startswith("[Not runnable in the offline emulator"), description
            assert model["metadata"]["display_name"].endswith(" [not runnable offline]")
    assert {m["endpoint_id"] for m in await all_models(client, q="runs-offline")} == runnable


async def test_free_text_category_and_status_filters(client: httpx2.AsyncClient) -> None:
    kling = await models(client, q="kling")
    assert {m["endpoint_id"] for m in kling["models"]} == {
        "fal-ai/kling-video/v2.1/pro/image-to-video",
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        "fal-ai/kling-video/v2.1/master/text-to-video",
    }
    words = await models(client, q="Speech MULTILINGUAL")  # every word, case-insensitive, over all fields
    assert [m["endpoint_id"] for m in words["models"]] == ["fal-ai/elevenlabs/tts/multilingual-v2"]
    speech = await models(client, q="text to speech")
    assert {m["metadata"]["category"] for m in speech["models"]} >= {"text-to-speech"}
    videos = await all_models(client, category="image-to-video")
    assert len(videos) >= 6
    assert all(m["metadata"]["category"] == "image-to-video" for m in videos)
    deprecated = await models(client, status="deprecated")
    assert {m["endpoint_id"] for m in deprecated["models"]} == {"fal-ai/fast-sdxl", "fal-ai/stable-video"}
    both = await models(client, category="image-to-video", status="active", q="motion")
    assert {m["endpoint_id"] for m in both["models"]} >= {
        "fal-ai/kling-video/v2.1/pro/image-to-video",
        "fal-ai/luma-dream-machine/ray-2/image-to-video",  # "natural, coherent motion"
    }
    assert (await models(client, q="no-such-model-anywhere"))["models"] == []
    bad = await client.get("/platform/models", params={"status": "retired"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "validation_error"


async def test_paging_to_the_end_with_cursors(client: httpx2.AsyncClient) -> None:
    everything = [m["endpoint_id"] for m in await all_models(client)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await models(client, limit=37, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += [m["endpoint_id"] for m in page["models"]]
        assert page["has_more"] is (page["next_cursor"] is not None)
        if not page["has_more"]:
            break
        assert len(page["models"]) == 37
        cursor = page["next_cursor"]
        assert base64.b64decode(cursor).decode() == str(pages + 1)  # fal's cursor: the page number
    assert seen == everything
    assert pages == -(-len(everything) // 37)
    assert (await client.get("/platform/models", params={"cursor": "%%%"})).status_code == 400
    assert (await client.get("/platform/models", params={"limit": "101"})).status_code == 400


async def test_find_mode_and_openapi_expansion_serve_fals_documents(client: httpx2.AsyncClient) -> None:
    wanted = ["fal-ai/wizper", "fal-ai/flux/dev", "fal-ai/not-a-model"]
    found = await models(client, endpoint_id=wanted, expand=["openapi-3.0", "enterprise_status"])
    assert [m["endpoint_id"] for m in found["models"]] == ["fal-ai/wizper", "fal-ai/flux/dev"]
    for model in found["models"]:
        assert model["openapi"] == openapi_document(model["endpoint_id"])  # fal's own document, verbatim
        assert model["enterprise_status"] == "ready"
    narrowed = await models(client, endpoint_id=wanted, q="whisper")
    assert [m["endpoint_id"] for m in narrowed["models"]] == ["fal-ai/wizper"]
    too_many = await client.get("/platform/models", params={"endpoint_id": [f"a/b{i}" for i in range(51)]})
    assert too_many.status_code == 400


async def test_pricing_speaks_fals_units(client: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    response = await client.get("/platform/models/pricing", params={"endpoint_id": "fal-ai/flux/dev,fal-ai/veo3"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "prices": [
            {"endpoint_id": "fal-ai/flux/dev", "unit_price": 0.025, "unit": "megapixels", "currency": "USD"},
            {"endpoint_id": "fal-ai/veo3", "unit_price": 0.75, "unit": "seconds", "currency": "USD"},
        ],
        "next_cursor": None,
        "has_more": False,
    }
    # Where fal's real price is known, the emulator asks the same; every unit is one of fal's strings.
    ids = [m["endpoint_id"] for m in await all_models(client)]
    prices: dict[str, Any] = {}
    for start in range(0, len(ids), 50):
        batch = await client.get("/platform/models/pricing", params={"endpoint_id": ids[start : start + 50]})
        prices |= {p["endpoint_id"]: p for p in batch.json()["prices"]}
    for endpoint_id, real in real_prices().items():
        if endpoint_id in prices:
            assert {k: prices[endpoint_id][k] for k in real} == real, endpoint_id
    assert {p["unit"] for p in prices.values()} <= {
        "megapixels",
        "images",
        "seconds",
        "videos",
        "compute seconds",
        "1000 characters",
        "minutes",
        "tokens",
    }
    repeated = await client.get("/platform/models/pricing", params={"endpoint_id": ["fal-ai/wizper", "fal-ai/veo3"]})
    assert [p["endpoint_id"] for p in repeated.json()["prices"]] == ["fal-ai/wizper", "fal-ai/veo3"]
    # One unknown id does not sink the batch: it is left out, like search's find mode.
    partly = await client.get("/platform/models/pricing", params={"endpoint_id": "fal-ai/nope,fal-ai/flux/dev"})
    assert partly.status_code == 200, partly.text
    assert [p["endpoint_id"] for p in partly.json()["prices"]] == ["fal-ai/flux/dev"]
    unknown = await client.get("/platform/models/pricing", params={"endpoint_id": "fal-ai/nope,fal-ai/nada"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {"type": "not_found", "message": "Endpoint(s) not found: fal-ai/nope, fal-ai/nada"}
    }
    async with httpx2.AsyncClient(base_url=emulator.base_url) as anonymous:
        denied = await anonymous.get("/platform/models/pricing", params={"endpoint_id": "fal-ai/flux/dev"})
    assert denied.status_code == 401
    assert denied.json() == {"error": {"type": "authorization_error", "message": "Authentication required"}}


async def test_cost_estimates(client: httpx2.AsyncClient) -> None:
    by_units = await client.post(
        "/platform/models/pricing/estimate",
        json={"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 40}}},
    )
    assert by_units.status_code == 200, by_units.text
    assert by_units.json() == {"estimate_type": "unit_price", "total_cost": 1.0, "currency": "USD"}
    by_calls = await client.post(
        "/platform/models/pricing/estimate",
        json={
            "estimate_type": "historical_api_price",
            "endpoints": {"fal-ai/veo3": {"call_quantity": 2}, "fal-ai/ideogram/v3": {"call_quantity": 10}},
        },
    )
    # veo3: 2 calls x 5 typical seconds x $0.75; ideogram: 10 images x $0.06
    assert by_calls.json() == {"estimate_type": "historical_api_price", "total_cost": 8.1, "currency": "USD"}
    bad = await client.post(
        "/platform/models/pricing/estimate",
        json={"estimate_type": "historical_api_price", "endpoints": {"fal-ai/veo3": {"call_quantity": 1.5}}},
    )
    assert bad.status_code == 400
    unknown_type = await client.post(
        "/platform/models/pricing/estimate", json={"estimate_type": "guess", "endpoints": {}}
    )
    assert unknown_type.status_code == 400


async def test_meta(client: httpx2.AsyncClient) -> None:
    response = await client.get("/platform/meta")
    assert response.status_code == 200
    assert response.json() == {"webhook_ip_ranges": ["127.0.0.1/32", "::1/128"]}


async def history(http: httpx2.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/platform/models/requests/by-endpoint", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_lagging_history_lists_a_request_only_after_it_finished_and_the_lag(make_emulator: MakeEmulator) -> None:
    """``history_lag_seconds``: fal's history as its spec suggests (sorted by end, so only finished requests)."""
    server = make_emulator(history_lag_seconds=25)  # 0.5 s real at this time scale
    async with client_for(server) as http:
        job = await submit(http, "emulator/slow", {"seconds": 3, "steps": 1})  # 60 ms
        queued_or_running = await history(http, endpoint_id="emulator/slow", request_id=job["request_id"])
        assert queued_or_running["items"] == []
        await wait_completed(http, job["status_url"])
        for _ in range(100):
            listed = await history(http, endpoint_id="emulator/slow", expand="payloads")
            seen_at = time.time()
            if listed["items"]:
                break
            await anyio.sleep(0.05)
        (item,) = listed["items"]
        assert item["request_id"] == job["request_id"] and item["status_code"] == 200 and item["ended_at"]
        assert item["json_input"] == {"seconds": 3, "steps": 1}
        ended = datetime.fromisoformat(item["ended_at"].replace("Z", "+00:00")).timestamp()
        assert seen_at >= ended + 0.5  # listed only once the lag had passed


async def test_request_history_lists_requests_from_submit_on(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    async with client_for(server) as http:
        slow = await submit(http, "emulator/slow", {"seconds": 3, "steps": 1})  # 60 ms at this time scale
        listed = await history(http, endpoint_id="emulator/slow", request_id=slow["request_id"])
        assert len(listed["items"]) == 1
        running = listed["items"][0]
        assert running["status_code"] is None and running["ended_at"] is None and running["duration"] is None
        assert "json_input" not in running

        failing = await submit(http, "emulator/slow", {"seconds": 0.1, "fail": True})
        await wait_completed(http, slow["status_url"])
        await wait_completed(http, failing["status_url"])
        result = (await http.get(slow["response_url"])).json()

        full = await history(http, endpoint_id="emulator/slow", expand="payloads")
        assert [i["request_id"] for i in full["items"]] == [
            slow["request_id"],
            failing["request_id"],
        ]  # newest end first
        done = full["items"][0]
        assert done["status_code"] == 200 and done["json_input"] == {"seconds": 3, "steps": 1}
        assert done["json_output"] == result
        assert done["duration"] > 0 and done["sent_at"] <= done["started_at"] <= done["ended_at"]
        assert full["items"][1]["status_code"] == 500

        success = await history(http, endpoint_id="emulator/slow", status="success")
        assert [i["request_id"] for i in success["items"]] == [slow["request_id"]]
        errors = await history(http, endpoint_id="emulator/slow", status="error")
        assert [i["request_id"] for i in errors["items"]] == [failing["request_id"]]

        paged = await history(http, endpoint_id="emulator/slow", limit=1)
        assert len(paged["items"]) == 1 and paged["has_more"] and paged["next_cursor"] == "Mg=="
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await history(http, endpoint_id="emulator/slow", start=future))["items"] == []
        assert (await history(http, endpoint_id="fal-ai/flux/dev"))["items"] == []

        missing = await http.get("/platform/models/requests/by-endpoint")
        assert missing.status_code == 400
        anonymous = await http.get(
            "/platform/models/requests/by-endpoint",
            params={"endpoint_id": "emulator/slow"},
            headers={"Authorization": ""},
        )
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "authorization_error"
