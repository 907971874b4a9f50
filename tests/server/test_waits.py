"""Client-aware waits: Claude Code backgrounds long calls, so its default wait is long; other hosts ~50 s.

The defaults are scaled down here (the real ones are 900 s and 50 s); the decision and the wait are real:
a job on the emulator either completes within the call or comes back with its request id.
"""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.types import Implementation

from fal_mcp.config import Settings
from fal_mcp.server import jobs
from tests.server.conftest import make_server
from tests.server.helpers import Progress, call, structured

pytestmark = pytest.mark.anyio

JOB = {"endpoint_id": "emulator/slow", "input": {"seconds": 40, "steps": 4}}  # ~0.8 s at the suite's time scale


@pytest.fixture
def scaled_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "DEFAULT_WAIT_SECONDS", 0.2)
    monkeypatch.setitem(jobs.LONG_WAIT_CLIENTS, "claude-code", 20.0)


@pytest.mark.parametrize(
    ("client_name", "wait_setting", "completes"),
    [
        ("claude-code", None, True),  # Claude Code: the long default covers the job
        ("cursor", None, False),  # any other host: the short default returns the request id
        (None, None, False),  # no clientInfo at all
        ("claude-code", 0.2, False),  # FAL_MCP_WAIT_SECONDS still overrides for Claude Code
    ],
)
async def test_default_wait_follows_the_client(
    settings: Settings,
    scaled_defaults: None,
    mode: str,
    client_name: str | None,
    wait_setting: float | None,
    completes: bool,
) -> None:
    server = make_server(settings, wait_seconds=wait_setting)
    info = Implementation(name=client_name, version="2.1.300") if client_name else None
    progress = Progress()
    async with Client(server, mode=mode, client_info=info) as client:
        result = structured(await call(client, "fal_subscribe", JOB, progress))
    assert (result["status"] == "COMPLETED") is completes, result
    if not completes:
        assert result["request_id"] and "queue_result" in result["next_step"]
    progress.assert_strictly_increasing()


async def test_wait_seconds_argument_overrides_the_client_default(settings: Settings, scaled_defaults: None) -> None:
    server = make_server(settings, wait_seconds=None)
    async with Client(server, client_info=Implementation(name="claude-code", version="2.1.300")) as client:
        result = structured(await call(client, "fal_subscribe", {**JOB, "wait_seconds": 0.1}))
    assert result["status"] != "COMPLETED"


def test_unset_environment_means_client_aware_and_a_set_one_wins() -> None:
    assert Settings.from_env({}).wait_seconds is None
    assert Settings.from_env({"FAL_MCP_WAIT_SECONDS": "30"}).wait_seconds == 30
