"""Everything is checked before paying: a call refused for its input schema, a file path, its download_dir,
its cost, a budget or a missing approval has submitted nothing (the emulator's submission count)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, text_of

pytestmark = pytest.mark.anyio

TEXT_TO_IMAGE = "fal-ai/fast-lcm-diffusion"
IMAGE_TO_IMAGE = "fal-ai/flux/dev/image-to-image"


def prompt() -> str:
    return f"a red kite {uuid.uuid4().hex[:8]}"


CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # name: (settings changed, tool arguments, expected error kind)
    "schema": ({}, {"endpoint_id": TEXT_TO_IMAGE, "input": {"prompt": 5}}, "invalid_input"),
    "unsendable": ({}, {"endpoint_id": TEXT_TO_IMAGE, "input": {"prompt": "x", "seed": 2**70}}, "invalid_argument"),
    "file_outside": (
        {},
        {"endpoint_id": IMAGE_TO_IMAGE, "input": {"prompt": "x", "image_url": "/etc/hostname"}},
        "refused",
    ),
    "cost_limit": ({"max_cost_usd": 0.0001}, {"endpoint_id": TEXT_TO_IMAGE, "input": {}}, "cost_limit"),
    "budget": ({"budget_usd_per_day": 0.0001}, {"endpoint_id": TEXT_TO_IMAGE, "input": {}}, "budget"),
    "approval": ({"confirm_above_usd": 0.0}, {"endpoint_id": TEXT_TO_IMAGE, "input": {}}, "approval_required"),
}


@pytest.mark.parametrize("tool", ["fal_subscribe", "queue_submit", "fal_run"])
@pytest.mark.parametrize("case", list(CASES))
async def test_a_refused_call_has_submitted_nothing(
    settings: Settings, emulator: EmulatorServer, workdir: Path, tool: str, case: str
) -> None:
    changed, args, kind = CASES[case]
    args = {**args, "input": {"prompt": prompt(), **args["input"]}} if case not in ("schema",) else args
    before = emulator.state.submissions.total()
    async with Client(make_server(settings, **changed)) as client:
        result = await call(client, tool, args)
    assert error_of(result)["kind"] == kind, text_of(result)
    assert emulator.state.submissions.total() == before


async def test_a_refused_download_dir_has_submitted_nothing(
    settings: Settings, emulator: EmulatorServer, workdir: Path
) -> None:
    before = emulator.state.submissions.total()
    async with Client(make_server(settings)) as client:
        args = {"endpoint_id": TEXT_TO_IMAGE, "input": {"prompt": prompt()}, "download_dir": "/etc/outputs"}
        result = await call(client, "fal_subscribe", args)
    assert error_of(result)["kind"] == "refused", text_of(result)
    assert emulator.state.submissions.total() == before


async def test_a_budget_that_cannot_be_read_refuses_with_nothing_submitted(
    settings: Settings, emulator: EmulatorServer, workdir: Path, tmp_path: Path
) -> None:
    """A budget is set but the ledger that records spending cannot be opened (here its path is a folder):
    the budget is never taken as unspent, so the call is refused before anything is sent."""
    before = emulator.state.submissions.total()
    async with Client(make_server(settings, budget_usd_per_day=5.0, ledger_path=tmp_path)) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": TEXT_TO_IMAGE, "input": {"prompt": prompt()}})
    assert error_of(result)["kind"] == "budget" and "cannot be checked" in text_of(result), text_of(result)
    assert emulator.state.submissions.total() == before
