"""The per-call cost limit (FAL_MCP_MAX_COST_USD) is never silently off: every unit the catalog prices is
either estimated and held to the limit, or (unknown) the user is asked before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.pricing import billing_quantity, parse_unit
from tests.server.conftest import TEST_KEY, make_server
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio


async def one_model_per_unit(settings: Settings) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """unit → (endpoint id, its suggested example input, whether the input tells the billing quantity)."""
    chosen: dict[str, tuple[str, dict[str, Any], bool]] = {}
    async with FalClient(credentials=credentials_from_key(TEST_KEY, source="test"), hosts=settings.hosts) as fal:
        cursor = None
        while True:
            page = await fal.catalog.search(limit=100, cursor=cursor)
            for model in page.models:
                unit = parse_unit(model.unit)
                if unit is None or model.unit in chosen:
                    continue
                schema = await fal.catalog.get_schema(model.endpoint_id)
                countable = billing_quantity(model.unit, schema.example_input, schema.input_schema) is not None
                chosen[model.unit] = (model.endpoint_id, schema.example_input, countable)
            if not page.has_more:
                return chosen
            cursor = page.next_cursor


def submissions_to(emulator: EmulatorServer, endpoint_id: str) -> int:
    return sum(n for key, n in emulator.state.submissions.items() if key.startswith(f"{endpoint_id} "))


async def test_every_priced_unit_is_held_to_the_limit(settings: Settings, emulator: EmulatorServer) -> None:
    per_unit = await one_model_per_unit(settings)
    assert len(per_unit) >= 4, per_unit  # images, megapixels, seconds, … and at least one only fal can estimate
    server = make_server(settings, max_cost_usd=0.000001)
    async with Client(server) as client:
        for unit, (endpoint_id, example, _countable) in per_unit.items():
            before = submissions_to(emulator, endpoint_id)
            result = await call(client, "fal_subscribe", {"endpoint_id": endpoint_id, "input": example})
            error = error_of(result)
            assert error["kind"] == "cost_limit", (unit, endpoint_id, text_of(result))
            assert error["cost_estimate_usd"] and error["cost_estimate_usd"] > 0.000001, (unit, error)
            assert submissions_to(emulator, endpoint_id) == before, unit


async def test_unknown_cost_with_a_limit_asks_not_waved_through(settings: Settings, emulator: EmulatorServer) -> None:
    per_unit = await one_model_per_unit(settings)
    uncountable = {unit: v for unit, v in per_unit.items() if not v[2]}
    assert uncountable, f"the catalog should price some model in a unit its input cannot tell: {per_unit}"
    rule = emulator.state.faults.add("400", role="platform", method="POST", path="/pricing/estimate$")
    try:
        server = make_server(settings, max_cost_usd=1000.0)
        async with Client(server) as client:
            for unit, (endpoint_id, example, _) in uncountable.items():
                before = submissions_to(emulator, endpoint_id)
                result = await call(client, "fal_run", {"endpoint_id": endpoint_id, "input": example})
                error = error_of(result)
                # A host without an approval form gets a one-time token to ask the user with (test_spend_gate.py).
                assert error["kind"] == "approval_required", (unit, text_of(result))
                assert "cannot be estimated" in text_of(result) and "Nothing was submitted" in text_of(result)
                assert submissions_to(emulator, endpoint_id) == before
    finally:
        rule.count = 0


async def test_fals_estimate_settles_what_the_input_cannot_tell(settings: Settings, emulator: EmulatorServer) -> None:
    per_unit = await one_model_per_unit(settings)
    endpoint_id, example, _ = next(v for v in per_unit.values() if not v[2])
    server = make_server(settings, max_cost_usd=0.000001)
    async with Client(server) as client:
        result = await call(client, "queue_submit", {"endpoint_id": endpoint_id, "input": example})
    error = error_of(result)
    assert error["kind"] == "cost_limit" and error["cost_estimate_usd"] > 0  # fal's estimate, held to the limit
    assert submissions_to(emulator, endpoint_id) == 0


async def test_without_a_limit_an_unknown_cost_is_a_note_and_no_extra_request(settings: Settings) -> None:
    server = make_server(settings)
    async with Client(server) as client:
        result = await call(
            client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a small cost"}}
        )
    assert not result.is_error, text_of(result)
    assert structured(result)["cost_estimate_usd"] == pytest.approx(0.025)  # schema defaults: 1 image of 1 MP


async def test_realtime_limit_holds_for_the_whole_call(settings: Settings, emulator: EmulatorServer) -> None:
    endpoint_id = "fal-ai/fast-lcm-diffusion"
    inputs = [{"prompt": f"frame {i}", "seed": i} for i in range(8)]
    async with Client(make_server(settings)) as client:
        one = await call(client, "fal_realtime", {"endpoint_id": endpoint_id, "inputs": inputs[:1]})
    assert not one.is_error, text_of(one)
    before = submissions_to(emulator, endpoint_id)
    async with FalClient(credentials=credentials_from_key(TEST_KEY, source="test"), hosts=settings.hosts) as fal:
        schema = await fal.catalog.get_schema(endpoint_id)
    per_input = schema.unit_price * billing_quantity(schema.unit, inputs[0], schema.input_schema).units
    server = make_server(settings, max_cost_usd=per_input * 3)  # every input is under it; all 8 are not
    async with Client(server) as client:
        result = await call(client, "fal_realtime", {"endpoint_id": endpoint_id, "inputs": inputs})
    error = error_of(result)
    assert error["kind"] == "cost_limit"
    assert error["cost_estimate_usd"] == pytest.approx(per_input * 8)
    assert submissions_to(emulator, endpoint_id) == before  # not one frame was sent
