"""``--local`` never meets real jobs: the ledger keeps each fal's jobs apart (owner bound to the fal origin),
so an emulator's jobs never show up in, or get re-attached from, another fal's view — including another
``--local`` process, whose emulator never had them — and jobs_list says which fal ran each job."""

from __future__ import annotations

import uuid

import anyio
import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.emulator.embedded import EmbeddedEmulator
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.ledger import Ledger
from fal_mcp.server.state import FAL_AI, LOCAL_OWNER, fal_of, ledger_owner
from tests.server.conftest import make_server
from tests.server.helpers import call, structured, text_of

pytestmark = pytest.mark.anyio

MODEL = "fal-ai/fast-lcm-diffusion"


def test_real_fal_keeps_the_plain_owner_and_others_are_namespaced() -> None:
    assert ledger_owner(LOCAL_OWNER, FalHosts()) == LOCAL_OWNER
    emulated = ledger_owner(LOCAL_OWNER, FalHosts.for_base_url("http://127.0.0.1:8790"))
    assert emulated == "local@http://127.0.0.1:8790"
    assert fal_of(LOCAL_OWNER) == FAL_AI == "fal.ai"
    assert fal_of(emulated) == "local emulator at http://127.0.0.1:8790"


async def subscribe(settings: Settings, data: dict[str, object]) -> dict[str, object]:
    """One server process's call; a ``--local`` one runs on its own embedded emulator, as the CLI gives it."""
    local_fal = EmbeddedEmulator(time_scale=settings.emulator_time_scale) if settings.local else None
    try:
        async with Client(make_server(settings, local_fal=local_fal)) as client:
            result = await call(client, "fal_subscribe", {"endpoint_id": MODEL, "input": data})
            assert not result.is_error, text_of(result)
            return structured(result)
    finally:
        if local_fal is not None:
            local_fal.stop()


async def listed(settings: Settings) -> list[dict[str, object]]:
    async with Client(make_server(settings)) as client:
        return structured(await call(client, "jobs_list", {"limit": 200}))["jobs"]


async def test_local_and_other_fals_never_share_jobs(settings: Settings, emulator: EmulatorServer) -> None:
    data = {"prompt": f"a harbour at dusk {uuid.uuid4().hex[:8]}"}
    local = settings.model_copy(update={"local": True, "hosts": FalHosts(), "emulator_time_scale": 0.05})
    # A job on real fal (recorded as a real-fal server would) and one on another fal (the shared emulator).
    async with await anyio.to_thread.run_sync(Ledger.open, settings.ledger_path) as ledger:
        real_intent = await ledger.record_intent(MODEL, LOCAL_OWNER, data, "fal_subscribe")
        await ledger.attach_request_id(real_intent, "11111111-2222-4333-8444-555555555555", status="COMPLETED")
    elsewhere = await subscribe(settings, data)

    before = emulator.state.submissions.total()
    first_local = await subscribe(local, data)  # identical input: must not re-attach to either job
    assert first_local["reattached"] is False
    assert first_local["request_id"] not in (elsewhere["request_id"], "11111111-2222-4333-8444-555555555555")
    assert emulator.state.submissions.total() == before  # ran on its own embedded emulator
    second_local = await subscribe(local, data)  # a new --local process: its emulator never had the first
    assert second_local["reattached"] is False and second_local["request_id"] != first_local["request_id"]

    real_view = await listed(settings.model_copy(update={"hosts": FalHosts()}))
    assert [j["request_id"] for j in real_view] == ["11111111-2222-4333-8444-555555555555"]
    assert real_view[0]["fal"] == "fal.ai"
    other_view = await listed(settings)
    assert [j["request_id"] for j in other_view] == [elsewhere["request_id"]]
    assert other_view[0]["fal"] == f"local emulator at {emulator.base_url}"
