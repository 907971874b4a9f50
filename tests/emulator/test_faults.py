"""Fault injection as a client really sees it: status codes, missing ids, dropped sockets, broken streams."""

from __future__ import annotations

import time

import httpx2
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.faults import FaultConfig, FaultRule
from tests.emulator.conftest import MakeEmulator, client_for, submit, wait_completed

pytestmark = pytest.mark.anyio

INPUT = {"prompt": "fault test"}
KEY = f"emulator/strict {input_digest(INPUT)}"


async def test_429_with_and_without_retry_after(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("429", count=1, retry_after=3)
    server.state.faults.add("429_no_retry_after", count=1)
    async with client_for(server) as http:
        first = await http.post("/queue/emulator/strict", json=INPUT)
        second = await http.post("/queue/emulator/strict", json=INPUT)
        third = await http.post("/queue/emulator/strict", json=INPUT)
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    assert second.status_code == 429 and "retry-after" not in second.headers
    for response in (first, second):
        assert response.json()["error_type"] == "concurrent_requests_limit"
        assert response.headers["x-fal-needs-retry"] == "1" and "x-fal-request-id" in response.headers
    assert third.status_code == 200
    assert server.state.submissions[KEY] == 1
    assert [f.kind for f in server.state.faults.fired] == ["429", "429_no_retry_after"]


async def test_next_two_submits_get_ingress_503(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("503", count=2, role="queue", method="POST")
    async with client_for(server) as http:
        responses = [await http.post("/queue/emulator/strict", json=INPUT) for _ in range(3)]
        status = await http.get(responses[2].json()["status_url"])
    assert [r.status_code for r in responses] == [503, 503, 200]
    for response in responses[:2]:
        assert "nginx" in response.text and response.headers["content-type"].startswith("text/html")
        assert "x-fal-request-id" not in response.headers  # what fal_client uses to call it an ingress error
    assert status.status_code in (200, 202)
    assert server.state.submissions[KEY] == 1


async def test_ingress_502_targets_role_method_and_path(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("502", role="queue", method="GET", path=r"/status$")
    async with client_for(server) as http:
        body = await submit(http, "emulator/strict", INPUT)
        status = await http.get(body["status_url"])
        assert status.status_code == 502 and "502 Bad Gateway" in status.text
        assert (await http.get(body["response_url"])).status_code in (200, 202)
        assert (await http.post("/run/emulator/strict", json=INPUT)).status_code == 200


async def test_drop_before_processing_leaves_no_request(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_before", count=1)
    async with client_for(server) as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.post("/queue/emulator/strict", json=INPUT)
        assert server.state.submissions[KEY] == 0
        assert server.state.queue.requests_for("emulator/strict") == []
        retried = await http.post("/queue/emulator/strict", json=INPUT)  # the connection pool recovers
        assert retried.status_code == 200
    assert server.state.submissions[KEY] == 1


async def test_drop_after_processing_leaves_the_request_enqueued(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=1, role="queue", method="POST")
    async with client_for(server) as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.post("/queue/emulator/strict", json=INPUT)
        assert server.state.submissions[KEY] == 1  # the ambiguous case: it was accepted, the answer was lost
        (record,) = server.state.queue.requests_for("emulator/strict")
        status_url = f"{server.base_url}/queue/emulator/strict/requests/{record.request_id}/status"
        assert (await wait_completed(http, status_url))["status"] == "COMPLETED"
    with pytest.raises(httpx2.RemoteProtocolError):
        server.state.faults.add("drop_after", count=1, role="run")
        async with client_for(server) as http:
            await http.post("/run/emulator/strict", json=INPUT)
    assert server.state.submissions[KEY] == 2


async def test_slow_responses_are_delayed(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("slow", count=1, delay_seconds=0.3, role="platform")
    server.state.faults.add("slow", count=1, delay_seconds=0.25, role="queue")
    async with client_for(server) as http:
        started = time.monotonic()
        response = await http.post("/queue/emulator/strict", json=INPUT)
        delayed = time.monotonic() - started
        started = time.monotonic()
        await http.post("/queue/emulator/strict", json=INPUT)
        normal = time.monotonic() - started
    assert response.status_code == 200
    assert delayed >= 0.25 and normal < 0.2


async def test_sse_break_cuts_the_status_stream_before_completed(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    async with client_for(server) as http:
        body = await submit(http, "emulator/slow", {"seconds": 10, "steps": 5})  # 200 ms with 5 log lines
        server.state.faults.add("sse_break", count=1, path=r"/status/stream$")
        events = []
        with pytest.raises(httpx2.RemoteProtocolError):
            async with http.sse(f"{body['status_url']}/stream", params={"logs": 1}) as source:
                async for event in source:
                    events.append(event.json())
        assert len(events) == 1 and events[0]["status"] != "COMPLETED"
        async with http.sse(f"{body['status_url']}/stream") as source:  # a reconnect gets the rest
            assert [event.json() async for event in source][-1]["status"] == "COMPLETED"


async def test_sse_break_cuts_a_model_stream(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("sse_break", count=1, role="run")
    async with client_for(server) as http:
        events = []
        with pytest.raises(httpx2.RemoteProtocolError):
            async with http.sse(
                "/run/openrouter/router/stream",
                method="POST",
                json={"prompt": "cut", "model": "google/gemini-2.5-flash"},
            ) as source:
                async for event in source:
                    events.append(event.json())
    assert len(events) == 1 and events[0]["partial"] is True


async def test_probabilistic_faults_are_reproducible_with_a_seed(make_emulator: MakeEmulator) -> None:
    config = FaultConfig.parse("rate=0.5,kinds=503,429,roles=run,seed=11")
    outcomes = []
    for _ in range(2):
        server = make_emulator(faults=config)
        async with client_for(server) as http:
            codes = [(await http.post("/run/emulator/strict", json=INPUT)).status_code for _ in range(16)]
        outcomes.append(codes)
    assert outcomes[0] == outcomes[1]
    assert {200, 503, 429} <= set(outcomes[0])


def test_fault_spec_parsing() -> None:
    config = FaultConfig.parse("rate=0.2,kinds=429,503,drop,slow,sse_break,roles=queue,run,methods=post,delay=0.5")
    assert config.rate == 0.2 and config.delay_seconds == 0.5
    assert config.kinds == ("429", "503", "drop_before", "slow", "sse_break")
    assert config.roles == ("queue", "run") and config.methods == ("POST",)
    env = EmulatorConfig.from_env({"FAL_EMULATOR_FAULTS": "rate=1,kind=drop_after", "FAL_EMULATOR_TIME_SCALE": "0.1"})
    assert (env.time_scale, env.faults.rate, env.faults.kinds) == (0.1, 1.0, ("drop_after",))
    for bad in ("rate=2", "kinds=teapot", "colour=red", "429"):
        with pytest.raises(ValueError):
            FaultConfig.parse(bad)
    assert FaultRule(kinds=("drop",), count=0).matches("queue", "POST", "/queue/x") is False
