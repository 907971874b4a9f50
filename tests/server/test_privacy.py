"""fal's privacy knobs: output lifetime (X-Fal-Object-Lifecycle-Preference) and no stored payloads
(X-Fal-Store-IO: 0), as settings and per-call arguments; jobs_list works without fal's stored payloads."""

from __future__ import annotations

import uuid

import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from tests.server.conftest import make_server
from tests.server.helpers import call, structured, text_of

pytestmark = pytest.mark.anyio

MODEL = "fal-ai/fast-lcm-diffusion"


def options_of(emulator: EmulatorServer, request_id: str) -> object:
    record = emulator.state.queue.get(request_id)
    assert record is not None
    return record.options


async def test_per_call_arguments_reach_fal(settings: Settings, emulator: EmulatorServer) -> None:
    data = {"prompt": f"a quiet street {uuid.uuid4().hex[:8]}"}
    async with Client(make_server(settings)) as client:
        result = await call(
            client,
            "fal_subscribe",
            {"endpoint_id": MODEL, "input": data, "expiration_seconds": 3600, "store_payload": False},
        )
        assert not result.is_error, text_of(result)
        request_id = structured(result)["request_id"]
        options = options_of(emulator, request_id)
        assert options.store_io is False  # type: ignore[attr-defined]
        assert options.lifecycle == {"expiration_duration_seconds": 3600}  # type: ignore[attr-defined]
        jobs = structured(await call(client, "jobs_list", {}))["jobs"]  # from the ledger, not fal's payloads
        job = next(j for j in jobs if j["request_id"] == request_id)
        assert "quiet street" in job["input_preview"] and job["status"] == "COMPLETED"
        plain = await call(client, "queue_submit", {"endpoint_id": MODEL, "input": {"prompt": "x" + data["prompt"]}})
        default = options_of(emulator, structured(plain)["request_id"])
        assert default.store_io is True and default.lifecycle is None  # type: ignore[attr-defined]


async def test_settings_apply_and_a_call_may_override_them(settings: Settings, emulator: EmulatorServer) -> None:
    server = make_server(settings, output_expiration_seconds=600, store_payload=False)
    async with Client(server) as client:
        submitted = await call(client, "queue_submit", {"endpoint_id": MODEL, "input": {"prompt": uuid.uuid4().hex}})
        options = options_of(emulator, structured(submitted)["request_id"])
        assert options.store_io is False  # type: ignore[attr-defined]
        assert options.lifecycle == {"expiration_duration_seconds": 600}  # type: ignore[attr-defined]
        args = {"endpoint_id": MODEL, "input": {"prompt": uuid.uuid4().hex}, "store_payload": True}
        overridden = await call(client, "queue_submit", {**args, "expiration_seconds": 60})
        options = options_of(emulator, structured(overridden)["request_id"])
        assert options.store_io is True  # type: ignore[attr-defined]
        assert options.lifecycle == {"expiration_duration_seconds": 60}  # type: ignore[attr-defined]
