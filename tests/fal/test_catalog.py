"""CatalogAPI against the emulator's Platform API and OpenAPI routes, and the TTL cache under it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal._http import FalHTTP
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.cache import MISSING, TTLCache
from fal_mcp.fal.catalog import CatalogAPI, Price, local_estimate, one_line
from fal_mcp.fal.errors import InvalidEndpointIdError, NotFoundError
from fal_mcp.fal.hosts import FalHosts
from tests.fal.conftest import FAST_RETRY, TEST_KEY, MakeEmulator


@asynccontextmanager
async def make_http(server: EmulatorServer, *, key: bool = True, **hosts: str) -> AsyncIterator[FalHTTP]:
    credentials = credentials_from_key(TEST_KEY, source="test") if key else None
    base = FalHosts.for_base_url(server.base_url)
    async with FalHTTP(hosts=replace(base, **hosts), credentials=credentials, retry=FAST_RETRY) as http:
        yield http


@pytest.fixture
async def http(emulator: EmulatorServer) -> AsyncIterator[FalHTTP]:
    async with make_http(emulator) as client:
        yield client


@pytest.fixture
async def keyless(emulator: EmulatorServer) -> AsyncIterator[FalHTTP]:
    async with make_http(emulator, key=False) as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# -- search -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_search_by_text_and_category(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)

    flux = await catalog.search("flux", limit=50)
    videos = await catalog.search(category="image-to-video", limit=50)

    assert flux.models and all(
        "flux" in (m.endpoint_id + m.display_name + " ".join(m.tags)).lower() for m in flux.models
    )
    assert "fal-ai/flux/dev" in [m.endpoint_id for m in flux.models]
    assert videos.models and {m.category for m in videos.models} == {"image-to-video"}
    dev = next(m for m in flux.models if m.endpoint_id == "fal-ai/flux/dev")
    assert (dev.display_name, dev.status, dev.kind) == ("FLUX.1 [dev]", "active", "inference")
    assert "\n" not in dev.description and dev.description


@pytest.mark.anyio
async def test_paging_with_cursors_visits_every_model_once(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)
    everything: list[str] = []
    cursor: str | None = None
    while True:
        big = await catalog.search(limit=100, cursor=cursor)
        everything += [m.endpoint_id for m in big.models]
        if not big.has_more:
            break
        cursor = big.next_cursor
    assert len(everything) > 100

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await catalog.search(limit=30, cursor=cursor)
        pages += 1
        seen += [m.endpoint_id for m in page.models]
        if not page.has_more:
            break
        assert page.next_cursor
        cursor = page.next_cursor

    assert seen == everything
    assert pages == -(-len(seen) // 30) and pages > 2


@pytest.mark.anyio
async def test_prices_are_merged_with_a_key(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)

    page = await catalog.search(category="text-to-image", limit=10)

    assert page.models and all(m.unit_price is not None and m.currency == "USD" for m in page.models)
    dev = await catalog.get_model("fal-ai/flux/dev")
    assert (dev.unit_price, dev.unit) == (0.025, "megapixels")
    # One search request and one pricing request for the page; get_model asks once, its price is cached.
    assert http.requests_sent == 3


@pytest.mark.anyio
async def test_without_a_key_search_works_and_prices_are_unknown(keyless: FalHTTP) -> None:
    catalog = CatalogAPI(keyless, None)

    page = await catalog.search("flux", limit=5)
    estimate = await catalog.estimate_cost("fal-ai/flux/dev", unit_quantity=2)

    assert page.models and all(m.unit_price is None for m in page.models)
    assert (estimate.total_cost, estimate.source) == (None, "unknown")
    assert "FAL_KEY" in (estimate.note or "")
    assert keyless.requests_sent == 1  # no pricing or estimate request without a key


@pytest.mark.anyio
async def test_pricing_outage_does_not_fail_search(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("503", role="platform", method="GET", path="/models/pricing$")
    async with make_http(server) as http:
        page = await CatalogAPI(http, None).search(limit=3)
    assert len(page.models) == 3 and all(m.unit_price is None for m in page.models)


@pytest.mark.anyio
async def test_a_refused_pricing_batch_falls_back_per_id(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("400", count=1, role="platform", method="GET", path="/models/pricing$")
    ids = ["fal-ai/flux/dev", "fal-ai/no-such-model", "fal-ai/flux/schnell"]
    async with make_http(server) as http:
        catalog = CatalogAPI(http, None)
        prices = await catalog.prices(ids)
        assert http.requests_sent == 1 + 3  # the refused batch, then each id alone
        again = await catalog.prices(ids)
        assert http.requests_sent == 4  # every answer, the unknown id's too, is cached
    assert prices["fal-ai/flux/dev"] is not None and prices["fal-ai/flux/schnell"] is not None
    assert prices["fal-ai/no-such-model"] is None
    assert again == prices


@pytest.mark.anyio
async def test_get_model_and_unknown_ids(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)

    model = await catalog.get_model("fal-ai/flux/dev/image-to-image")
    assert model.category == "image-to-image"

    with pytest.raises(NotFoundError, match="no model 'fal-ai/nope' on fal; use model_search"):
        await catalog.get_model("fal-ai/nope")
    sent = http.requests_sent
    with pytest.raises(InvalidEndpointIdError):
        await catalog.get_model("https://evil.example/x")
    assert http.requests_sent == sent


# -- schemas ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_schema_of_flux_dev(http: FalHTTP) -> None:
    schema = await CatalogAPI(http, None).get_schema("fal-ai/flux/dev")

    assert (schema.endpoint_id, schema.display_name, schema.category) == (
        "fal-ai/flux/dev",
        "FLUX.1 [dev]",
        "text-to-image",
    )
    assert schema.file_fields == []
    raw = (await http.client.get(http.url("openapi"), params={"endpoint_id": "fal-ai/flux/dev"})).json()
    assert (
        list(schema.input_schema["properties"])
        == raw["components"]["schemas"]["FluxDevInput"]["x-fal-order-properties"]
    )
    assert "$ref" not in json.dumps(schema.input_schema) + json.dumps(schema.output_schema)
    assert "images" in schema.output_schema["properties"]
    assert (schema.unit_price, schema.unit, schema.currency) == (0.025, "megapixels", "USD")
    jsonschema.Draft202012Validator.check_schema(schema.input_schema)
    assert "prompt" in schema.example_input
    assert jsonschema.Draft202012Validator(schema.input_schema).is_valid(schema.example_input)


@pytest.mark.anyio
async def test_schema_of_image_to_image_has_its_file_field(http: FalHTTP) -> None:
    schema = await CatalogAPI(http, None).get_schema("fal-ai/flux/dev/image-to-image")

    assert schema.file_fields == ["image_url"]
    assert set(schema.input_schema["required"]) >= {"image_url", "prompt"}
    assert jsonschema.Draft202012Validator(schema.input_schema).is_valid(schema.example_input)


@pytest.mark.anyio
async def test_schema_of_unknown_model(http: FalHTTP) -> None:
    with pytest.raises(NotFoundError, match="no model 'fal-ai/does-not-exist' on fal; use model_search"):
        await CatalogAPI(http, None).get_schema("fal-ai/does-not-exist")


@pytest.mark.anyio
async def test_schema_falls_back_to_platform_expand(emulator: EmulatorServer) -> None:
    async with make_http(emulator, openapi=emulator.base_url + "/openapi-is-down") as http:
        schema = await CatalogAPI(http, None).get_schema("fal-ai/flux/dev/image-to-image")
    assert schema.file_fields == ["image_url"]
    assert schema.display_name == "FLUX.1 [dev] Image-to-Image"


@pytest.mark.anyio
async def test_schema_works_without_a_key(keyless: FalHTTP) -> None:
    schema = await CatalogAPI(keyless, None).get_schema("fal-ai/wizper")
    assert schema.file_fields == ["audio_url"]
    assert schema.unit_price is None


# -- estimates ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_estimate_from_fal(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)

    by_units = await catalog.estimate_cost("fal-ai/flux/dev", unit_quantity=4)
    by_calls = await catalog.estimate_cost("fal-ai/flux/dev", call_quantity=10)

    assert (by_units.total_cost, by_units.estimate_type, by_units.source) == (0.1, "unit_price", "api")
    assert (by_calls.total_cost, by_calls.estimate_type, by_calls.source) == (0.25, "historical_api_price", "api")
    with pytest.raises(ValueError):
        await catalog.estimate_cost("fal-ai/flux/dev", unit_quantity=1, call_quantity=1)
    with pytest.raises(NotFoundError, match="no model"):
        await catalog.estimate_cost("fal-ai/unknown-model", unit_quantity=1)


@pytest.mark.anyio
async def test_estimate_falls_back_to_unit_price(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("503", role="platform", method="POST", path="/pricing/estimate$")
    async with make_http(server) as http:
        estimate = await CatalogAPI(http, None).estimate_cost("fal-ai/flux/dev", unit_quantity=4)
    assert (estimate.total_cost, estimate.currency, estimate.source) == (0.1, "USD", "local")
    assert "megapixel" in (estimate.note or "")


def test_local_estimate() -> None:
    price = Price(unit_price=0.05, unit="second")
    assert local_estimate(price, unit_quantity=6).total_cost == 0.3
    per_call = local_estimate(price, call_quantity=3)
    assert (per_call.total_cost, per_call.estimate_type) == (0.15, "historical_api_price")
    assert "one billing unit per call" in (per_call.note or "")
    assert local_estimate(None, unit_quantity=1).source == "unknown"


def test_one_line() -> None:
    assert one_line("  A model.\n\nIt   draws. ") == "A model. It draws."
    long = one_line("word " * 100, limit=50)
    assert len(long) <= 50 and long.endswith("…")


# -- caching ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_repeat_lookups_cost_no_request(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)
    await catalog.search("flux", limit=5)
    await catalog.get_schema("fal-ai/flux/dev")
    sent = http.requests_sent

    again = await catalog.search("flux", limit=5)
    schema = await catalog.get_schema("fal-ai/flux/dev")

    assert http.requests_sent == sent
    assert again.models[0].unit_price is not None and schema.unit_price == 0.025


@pytest.mark.anyio
async def test_disk_cache_survives_a_restart(emulator: EmulatorServer, tmp_path: Path) -> None:
    async with make_http(emulator) as first_http:
        first = CatalogAPI(first_http, tmp_path)
        await first.search(category="training", limit=5)
        original = await first.get_schema("fal-ai/flux/dev/image-to-image")
    async with make_http(emulator) as second_http:
        second = CatalogAPI(second_http, tmp_path)
        page = await second.search(category="training", limit=5)
        schema = await second.get_schema("fal-ai/flux/dev/image-to-image")
        assert second_http.requests_sent == 0
    assert schema == original
    assert page.models and page.models[0].unit_price is not None


@pytest.mark.anyio
async def test_entries_expire_by_kind(http: FalHTTP, tmp_path: Path) -> None:
    clock = Clock()
    catalog = CatalogAPI(http, tmp_path, clock=clock)
    await catalog.get_schema("fal-ai/flux/dev")
    await catalog.search("flux", limit=5)
    sent = http.requests_sent

    clock.now += 11 * 60  # search pages (10 min) are stale; schemas (24 h) and prices (1 h) are not
    await catalog.get_schema("fal-ai/flux/dev")
    await catalog.search("flux", limit=5)
    assert http.requests_sent == sent + 1

    clock.now += 25 * 3600  # now everything is stale
    await catalog.get_schema("fal-ai/flux/dev")
    assert http.requests_sent > sent + 1


@pytest.mark.anyio
async def test_concurrent_identical_lookups_make_one_request_each(http: FalHTTP) -> None:
    catalog = CatalogAPI(http, None)
    results: list[Any] = []

    async def lookup() -> None:
        results.append(await catalog.get_schema("fal-ai/flux/dev/image-to-image"))
        results.append(await catalog.search("video", limit=4))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(lookup)

    # openapi + metadata + price for the schema; search + prices for the page
    assert http.requests_sent == 5
    assert len(results) == 16


# -- the cache itself ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_ignores_and_rewrites_corrupt_files(tmp_path: Path) -> None:
    cache = TTLCache(tmp_path)
    await cache.set("schema", ["k"], {"v": 1})
    (entry,) = (tmp_path / "schema").glob("*.json")
    entry.write_text('{"format": 1, "kind": "schema", "stored_at": 1')  # truncated

    fresh = TTLCache(tmp_path)
    assert await fresh.get("schema", ["k"]) is MISSING
    assert await fresh.get_or_fetch("schema", ["k"], _const({"v": 2})) == {"v": 2}
    assert json.loads(entry.read_text())["value"] == {"v": 2}
    assert [p.name for p in (tmp_path / "schema").iterdir()] == [entry.name]  # no temp files left behind


@pytest.mark.anyio
async def test_cache_memory_only_lru_and_copies() -> None:
    cache = TTLCache(None, max_entries=2)
    await cache.set("model", "a", {"n": [1]})
    await cache.set("model", "b", {"n": [2]})
    hit = await cache.get("model", "a")
    hit["n"].append(99)  # callers may mutate what they get
    await cache.set("model", "c", {"n": [3]})  # evicts "b", the least recently used

    assert await cache.get("model", "a") == {"n": [1]}
    assert await cache.get("model", "b") is MISSING
    assert await cache.get("model", "c") == {"n": [3]}


@pytest.mark.anyio
async def test_single_flight_shares_errors_and_does_not_cache_them() -> None:
    cache = TTLCache(None)
    calls = 0

    async def failing() -> Any:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.02)
        raise NotFoundError("gone", status_code=404)

    errors: list[Exception] = []

    async def one() -> None:
        try:
            await cache.get_or_fetch("model", "x", failing)
        except NotFoundError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert (calls, len(errors)) == (1, 5)
    assert await cache.get_or_fetch("model", "x", _const({"ok": True})) == {"ok": True}


def _const(value: Any) -> Any:
    async def fetch() -> Any:
        return value

    return fetch
