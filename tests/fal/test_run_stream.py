"""RunAPI against the emulator: direct runs (``/run``) and SSE streams (``/run/…/stream``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar

import anyio
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.models.base import EmulatedModel, ModelInfo, RunContext, request_error
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import (
    FalAPIError,
    FalConnectionError,
    FalTimeoutError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from tests.fal.conftest import MakeEmulator, make_client

pytestmark = pytest.mark.anyio

LLM = "openrouter/router"
LLM_MODEL = "google/gemini-2.5-flash"


class _Streamer(EmulatedModel):
    """A test model whose stream misbehaves in the way its input asks."""

    info: ClassVar[ModelInfo] = ModelInfo(
        endpoint_id="test/streamer", display_name="Streamer", category="llm", description="misbehaving stream"
    )
    supports_stream: ClassVar[bool] = True
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"mode": {"type": "string"}, "pause": {"type": "number"}},
    }
    output_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def stream(self, data: dict[str, Any], ctx: RunContext) -> AsyncIterator[Any]:
        yield {"output": "first", "partial": True}
        await anyio.sleep(data.get("pause", 0))
        if data["mode"] == "error":
            raise request_error("runner_server_error", "the model crashed mid-stream")
        if data["mode"] == "not_object":
            yield ["not", "an", "object"]
        yield {"output": "done", "partial": False}


@pytest.fixture
def streamer(make_emulator: MakeEmulator) -> EmulatorServer:
    server = make_emulator()
    server.state.models.add(_Streamer())
    return server


async def stream_all(fal: FalClient, endpoint_id: str, data: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    async with aclosing(fal.runs.stream(endpoint_id, data, **kwargs)) as events:
        return [event async for event in events]


async def test_run_returns_output_request_id_and_billable_units(fal: FalClient, emulator: EmulatorServer) -> None:
    data = {"seconds": 3, "steps": 1, "case": "run"}
    result = await fal.runs.run("emulator/slow", data, hint="h1", start_timeout=10)
    assert result.data == {"steps": 1, "seconds": 3, "message": "Slept 3 seconds in 1 steps"}
    assert result.request_id and result.headers["x-fal-request-id"] == result.request_id
    assert result.billable_units == 3.0
    assert emulator.state.submissions[f"emulator/slow {input_digest(data)}"] == 1


async def test_run_errors_are_mapped(fal: FalClient) -> None:
    with pytest.raises(ValidationError) as caught:
        await fal.runs.run("emulator/strict", {"prompt": "hi", "num_images": 0})
    assert {e.field_path for e in caught.value.errors} == {"prompt", "num_images"}
    assert caught.value.request_id
    with pytest.raises(NotFoundError):
        await fal.runs.run("nobody/nothing", {})


async def test_run_is_retried_only_when_fal_refused_it(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    faults = server.state.faults
    async with make_client(server) as fal:
        faults.add("429", count=1, role="run")
        faults.add("503", count=1, role="run")
        data = {"seconds": 1, "case": "refused"}
        assert (await fal.runs.run("emulator/slow", data)).data["seconds"] == 1
        assert server.state.submissions[f"emulator/slow {input_digest(data)}"] == 1

        faults.add("drop_after", count=1, role="run")  # it ran, the answer was lost: never re-sent
        lost = {"seconds": 1, "case": "lost"}
        with pytest.raises(FalConnectionError):
            await fal.runs.run("emulator/slow", lost)
        assert server.state.submissions[f"emulator/slow {input_digest(lost)}"] == 1
    assert [f.kind for f in faults.fired] == ["429", "503", "drop_after"]


async def test_stream_yields_partials_then_the_final_output(fal: FalClient) -> None:
    events = await stream_all(fal, LLM, {"prompt": "hello stream", "model": LLM_MODEL})
    assert len(events) > 2
    assert all(e["partial"] for e in events[:-1]) and events[-1]["partial"] is False
    assert events[-1]["output"].startswith('You asked: "hello stream".')
    assert all(events[-1]["output"].startswith(e["output"]) for e in events)


async def test_stream_errors_before_the_stream_are_mapped(fal: FalClient) -> None:
    with pytest.raises(ValidationError) as caught:
        await stream_all(fal, LLM, {"model": "nope", "temperature": 3})
    assert {e.field_path for e in caught.value.errors} >= {"prompt", "temperature"}
    with pytest.raises(NotFoundError):  # a model without /stream
        await stream_all(fal, "emulator/slow", {"seconds": 1})


async def test_error_mid_stream_raises_after_the_first_events(streamer: EmulatorServer) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(streamer) as fal:
        with pytest.raises(ServerError) as caught:
            async with aclosing(fal.runs.stream("test/streamer", {"mode": "error"})) as events:
                async for event in events:
                    seen.append(event)
    assert seen == [{"output": "first", "partial": True}]
    assert caught.value.error_type == "runner_server_error" and "mid-stream" in caught.value.message
    assert caught.value.request_id


async def test_event_that_is_not_an_object_is_a_clear_error(streamer: EmulatorServer) -> None:
    async with make_client(streamer) as fal:
        with pytest.raises(FalAPIError, match="not a JSON object"):
            await stream_all(fal, "test/streamer", {"mode": "not_object"})


async def test_idle_stream_times_out(streamer: EmulatorServer) -> None:
    async with make_client(streamer) as fal:
        with pytest.raises(FalTimeoutError, match=r"sent nothing for 0\.2 s"):
            await stream_all(fal, "test/streamer", {"mode": "ok", "pause": 1.0}, idle_timeout=0.2)
        events = await stream_all(fal, "test/streamer", {"mode": "ok", "pause": 0.05}, idle_timeout=0.5)
    assert events[-1] == {"output": "done", "partial": False}


async def test_broken_stream_raises_connection_error(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("sse_break", count=1, role="run")
    async with make_client(server) as fal:
        seen = []
        with pytest.raises(FalConnectionError):
            async with aclosing(fal.runs.stream(LLM, {"prompt": "cut me off", "model": LLM_MODEL})) as events:
                async for event in events:
                    seen.append(event)
    assert len(seen) == 1
