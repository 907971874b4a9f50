"""The JS client's proxy mode over real HTTP: ``x-fal-target-url`` mapped to the emulator and served in-process."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx2
import pytest

from fal_mcp.emulator.server import EmulatorServer

pytestmark = pytest.mark.anyio

TARGET = "x-fal-target-url"


def via(target: str, **headers: str) -> dict[str, str]:
    return {TARGET: target, **headers}


@pytest.fixture
async def browser(emulator: EmulatorServer) -> AsyncIterator[httpx2.AsyncClient]:
    """Like a browser using proxyUrl: no key of its own, every call to the proxy route."""
    async with httpx2.AsyncClient(base_url=emulator.base_url, timeout=10.0) as http:
        yield http


async def test_submit_status_result_through_the_proxy(browser: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    submitted = await browser.post(
        "/proxy", json={"prompt": "a kestrel", "seed": 9}, headers=via("https://queue.fal.run/fal-ai/flux/dev")
    )
    assert submitted.status_code == 200, submitted.text
    queued = submitted.json()
    assert queued["status"] == "IN_QUEUE"
    assert submitted.headers["x-fal-request-id"]
    # URLs name the emulator (the host the client addressed); the JS client rebuilds fal URLs anyway.
    assert queued["status_url"].startswith(f"{emulator.base_url}/queue/fal-ai/flux/requests/")

    fal_status = f"https://queue.fal.run/fal-ai/flux/requests/{queued['request_id']}/status?logs=1"
    deadline = time.monotonic() + 10
    while True:
        status = await browser.get("/api/fal/proxy", headers=via(fal_status))  # the Next.js path works too
        assert status.status_code in (200, 202), status.text
        if status.json()["status"] == "COMPLETED":
            break
        assert time.monotonic() < deadline
    assert status.status_code == 200 and isinstance(status.json()["logs"], list)

    own_result = await browser.get("/proxy", headers=via(queued["response_url"]))  # emulator URL as target
    fal_result = await browser.get(
        "/proxy", headers=via(f"https://queue.fal.run/fal-ai/flux/requests/{queued['request_id']}")
    )
    assert own_result.status_code == fal_result.status_code == 200
    assert own_result.json() == fal_result.json()
    assert own_result.json()["seed"] == 9 and own_result.json()["images"]


async def test_event_stream_is_passed_through_live(browser: httpx2.AsyncClient) -> None:
    queued = (
        await browser.post(
            "/proxy", json={"seconds": 25, "steps": 5}, headers=via("https://queue.fal.run/emulator/slow")
        )
    ).json()  # 0.5 s at the shared emulator's time scale
    target = f"https://queue.fal.run/emulator/slow/requests/{queued['request_id']}/status/stream?logs=1"
    arrivals: list[tuple[float, dict]] = []
    async with browser.stream("GET", "/proxy", headers=via(target, accept="text/event-stream")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic(), json.loads(line[5:])))
    assert arrivals[-1][1]["status"] == "COMPLETED"
    assert len(arrivals) >= 3
    # Not buffered: the first event came well before the last one.
    assert arrivals[-1][0] - arrivals[0][0] > 0.2


async def test_other_hosts_map_to_their_roles(browser: httpx2.AsyncClient) -> None:
    models = await browser.get("/proxy", headers=via("https://api.fal.ai/v1/models?endpoint_id=fal-ai/flux/dev"))
    assert [m["endpoint_id"] for m in models.json()["models"]] == ["fal-ai/flux/dev"]
    document = await browser.get(
        "/proxy", headers=via("https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=fal-ai/flux/dev")
    )
    assert document.json()["info"]["title"] == "Queue OpenAPI for fal-ai/flux/dev"
    init = await browser.post(
        "/proxy",
        json={"file_name": "a.txt", "content_type": "text/plain"},
        headers=via("https://rest.alpha.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"),
    )
    assert init.status_code == 200, init.text
    put = await browser.put(
        "/proxy", content=b"proxied bytes", headers=via(init.json()["upload_url"], **{"content-type": "text/plain"})
    )
    assert put.status_code == 200
    cdn_path = urlsplit(init.json()["file_url"]).path.removeprefix("/cdn")
    served = await browser.get("/proxy", headers=via(f"https://v3b.fal.media{cdn_path}"))
    assert served.content == b"proxied bytes"
    assert served.headers["content-type"] == "text/plain"


async def test_caller_credentials_pass_through(emulator: EmulatorServer, browser: httpx2.AsyncClient) -> None:
    target = via("https://api.fal.ai/v1/models/pricing?endpoint_id=fal-ai/flux/dev")
    with_key = await browser.get("/proxy", headers={**target, "authorization": "Key caller-key"})
    assert with_key.status_code == 200
    bad_scheme = await browser.get("/proxy", headers={**target, "authorization": "Basic abc"})
    assert bad_scheme.status_code == 401  # the caller's own (bad) header is forwarded, not replaced


async def test_missing_or_foreign_target(browser: httpx2.AsyncClient) -> None:
    missing = await browser.post("/proxy", json={})
    assert missing.status_code == 400
    assert missing.json() == {"details": "Missing the x-fal-target-url header"}
    for target in (
        "https://evil.example/fal-ai/flux/dev",
        "https://fal.ai.evil.example/x",
        "not a url",
        "http://127.0.0.1:1/queue/x",
    ):
        refused = await browser.post("/proxy", json={}, headers=via(target))
        assert refused.status_code == 412, target
        assert refused.json() == {"details": "Invalid x-fal-target-url header"}
