"""Direct runs, model streaming (``/run/…/stream``) and the queue's status stream, over real HTTP."""

from __future__ import annotations

import itertools
import json
import time
import uuid

import httpx2
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import MakeEmulator, client_for, submit

pytestmark = pytest.mark.anyio


async def test_run_returns_output_with_request_id(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    data = {"prompt": "run me", "num_images": 2}
    response = await client.post("/run/emulator/strict", json=data)
    assert response.status_code == 200
    assert response.json()["input"]["prompt"] == "run me"
    assert uuid.UUID(response.headers["x-fal-request-id"])
    assert response.headers["x-fal-billable-units"] == "1"
    assert emulator.state.submissions[f"emulator/strict {input_digest(data)}"] == 1


async def test_run_errors(client: httpx2.AsyncClient) -> None:
    invalid = await client.post("/run/emulator/strict", json={"style": "oil"})
    assert invalid.status_code == 422
    assert [(d["loc"], d["type"]) for d in invalid.json()["detail"]] == [
        (["body", "prompt"], "missing"),
        (["body", "style"], "one_of"),
    ]
    assert "x-fal-request-id" in invalid.headers
    unknown_app = await client.post("/run/someone/nothing", json={})
    assert (unknown_app.status_code, unknown_app.json()) == (404, {"detail": 'Application "nothing" not found'})
    unknown_path = await client.post("/run/emulator/slow/faster", json={})
    assert (unknown_path.status_code, unknown_path.json()) == (404, {"detail": "Path /faster not found"})
    failing = await client.post("/run/emulator/slow", json={"seconds": 0, "fail": True})
    assert failing.status_code == 500
    assert failing.json()["error_type"] == failing.headers["x-fal-error-type"] == "internal_error"
    assert (await client.get("/run/emulator/slow")).status_code == 405


async def test_run_auth_and_body_errors(make_emulator: MakeEmulator, client: httpx2.AsyncClient) -> None:
    async with httpx2.AsyncClient(base_url=client.base_url) as anonymous:
        denied = await anonymous.post("/run/emulator/strict", json={"prompt": "abc"})
        assert (denied.status_code, denied.json()) == (401, {"detail": "invalid key credentials"})
    broken = await client.post("/run/emulator/strict", content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid" and broken.json()["detail"][0]["loc"] == ["body", 1]
    small = make_emulator(max_request_body_bytes=100, require_auth=False)
    async with httpx2.AsyncClient(base_url=small.base_url) as open_client:
        assert (await open_client.post("/run/emulator/strict", json={"prompt": "no key needed"})).status_code == 200
        too_big = await open_client.post("/run/emulator/strict", json={"prompt": "y" * 200})
        assert too_big.status_code == 413


async def test_stream_sends_partials_then_final(client: httpx2.AsyncClient) -> None:
    events = []
    async with client.sse(
        "/run/openrouter/router/stream",
        method="POST",
        json={"prompt": "Tell me a story", "model": "google/gemini-2.5-flash"},
    ) as source:
        assert source.response.status_code == 200
        assert uuid.UUID(source.response.headers["x-fal-request-id"])
        events = [event.json() async for event in source]
    assert len(events) > 3
    *partials, final = events
    assert all(e["partial"] is True for e in partials) and final["partial"] is False and final["error"] is None
    outputs = [e["output"] for e in events]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(outputs))
    ran = await client.post(
        "/run/openrouter/router", json={"prompt": "Tell me a story", "model": "google/gemini-2.5-flash"}
    )
    assert ran.json()["output"] == final["output"]


async def test_stream_errors_before_the_stream_are_json(client: httpx2.AsyncClient) -> None:
    invalid = await client.post("/run/openrouter/router/stream", json={"model": "gpt-0", "temperature": 9})
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/json"
    assert {d["type"] for d in invalid.json()["detail"]} == {"missing", "less_than_equal"}
    no_stream = await client.post("/run/emulator/strict/stream", json={"prompt": "abc"})
    assert (no_stream.status_code, no_stream.json()) == (404, {"detail": "Path /stream not found"})


async def test_status_stream_events_new_logs_and_close(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/slow", {"seconds": 5, "steps": 5})  # 100 ms, a log every 20 ms
    received_at = 0.0
    events = []
    async with client.sse(f"{body['status_url']}/stream", params={"logs": "1"}) as source:
        assert source.response.headers["x-fal-request-id"] == body["request_id"]
        async for event in source:
            events.append(event.json())
            received_at = time.time()
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "COMPLETED" and statuses.count("COMPLETED") == 1
    assert "IN_PROGRESS" in statuses
    messages = [entry["message"] for e in events if e.get("logs") for entry in e["logs"]]
    assert messages == [f"step {i}/5" for i in range(1, 6)]  # each event carries only new lines
    assert sum(1 for e in events if e.get("logs")) >= 3  # delivered as they happened, not in one batch
    final = events[-1]
    assert final["metrics"]["inference_time"] > 0 and final["response_url"] == body["response_url"]
    assert all(e["metrics"] == {} for e in events[:-1] if e["status"] != "IN_QUEUE")
    record = emulator.state.queue.get(body["request_id"])
    assert record is not None and record.completed_at is not None
    latency = received_at - record.completed_at
    assert 0 <= latency < 0.02, f"COMPLETED reached the client {latency * 1000:.1f} ms after the model finished"


async def test_status_stream_without_logs_and_for_finished_requests(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/slow", {"seconds": 1, "steps": 2})
    async with client.sse(f"{body['status_url']}/stream") as source:
        events = [event.json() async for event in source]
    assert events[-1]["status"] == "COMPLETED"
    assert all(e["logs"] is None for e in events if e["status"] != "IN_QUEUE")
    async with client.sse(f"{body['status_url']}/stream", params={"logs": "1"}) as source:
        again = [event.json() async for event in source]
    assert [e["status"] for e in again] == ["COMPLETED"]
    assert [entry["message"] for entry in again[0]["logs"]] == ["step 1/2", "step 2/2"]
    missing = await client.get(f"/queue/emulator/slow/requests/{uuid.uuid4()}/status/stream")
    assert (missing.status_code, missing.json()) == (404, {"status": "NOT_FOUND"})


async def test_status_stream_pings_and_queue_positions(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1, ping_interval_seconds=0.03)
    async with client_for(server) as http:
        first = await submit(http, "emulator/slow", {"seconds": 10, "steps": 1})  # 200 ms, no logs meanwhile
        second = await submit(http, "emulator/slow", {"seconds": 0, "steps": 1})
        lines: list[str] = []
        async with http.stream("GET", f"{second['status_url']}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
        assert (await http.get(first["status_url"])).status_code == 200
    assert lines.count(": ping") >= 3
    statuses = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert (statuses[0]["status"], statuses[0]["queue_position"]) == ("IN_QUEUE", 0)
    assert [s["status"] for s in statuses][-1] == "COMPLETED"


async def test_run_and_stream_accept_a_jwt_for_their_app(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    """The JS client's client-side streaming sends ``?fal_jwt_token=`` and no header."""

    async def jwt(*apps: str) -> str:
        response = await client.post("/rest/tokens/", json={"allowed_apps": list(apps)})
        assert response.status_code == 200, response.text
        return response.json()

    llm, other = await jwt("router"), await jwt("flux")
    async with httpx2.AsyncClient(base_url=emulator.base_url) as anonymous:
        stream = "/run/openrouter/router/stream"
        async with anonymous.sse(
            stream,
            method="POST",
            params={"fal_jwt_token": llm},
            json={"prompt": "hi", "model": "google/gemini-2.5-flash"},
        ) as events:
            assert events.response.status_code == 200
            final = [event.json() async for event in events][-1]
        assert final["partial"] is False and final["output"].startswith('You asked: "hi"')
        ran = await anonymous.post(
            "/run/openrouter/router",
            params={"fal_jwt_token": llm},
            json={"prompt": "hi", "model": "google/gemini-2.5-flash"},
        )
        assert ran.status_code == 200 and ran.json()["output"] == final["output"]
        for token, reason in ((other, "token does not allow app 'router'"), ("not.a.jwt", "malformed token")):
            denied = await anonymous.post(
                stream, params={"fal_jwt_token": token}, json={"prompt": "hi", "model": "google/gemini-2.5-flash"}
            )
            assert (denied.status_code, denied.json()) == (401, {"detail": f"invalid fal_jwt_token: {reason}"})
        # The queue does not take app tokens: a submit needs the key.
        queued = await anonymous.post(
            "/queue/openrouter/router",
            params={"fal_jwt_token": llm},
            json={"prompt": "hi", "model": "google/gemini-2.5-flash"},
        )
        assert queued.status_code == 401
