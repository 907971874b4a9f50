"""The realtime WebSocket over real loopback: tokens from /rest/tokens/, msgpack frames, fal's error frames."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import fal_client
import fal_client.client as fal_client_module
import httpx2
import msgpack
import pytest
import websockets
from fal_client.client import RealtimeError

from fal_mcp.emulator.server import EmulatorServer

pytestmark = pytest.mark.anyio

KEY = "test-key-id:test-key-secret"
LCM = "fal-ai/fast-lcm-diffusion"


def ws_url(server: EmulatorServer, endpoint: str, **query: str) -> str:
    url = f"{server.base_url.replace('http://', 'ws://')}/run/{endpoint}/realtime"
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


async def token(client: httpx2.AsyncClient, *apps: str, seconds: int = 120) -> str:
    response = await client.post("/rest/tokens/", json={"allowed_apps": list(apps), "token_expiration": seconds})
    assert response.status_code == 200, response.text
    value = response.json()
    assert isinstance(value, str)  # a bare JSON string, as fal answers
    return value


async def recv_json(ws: Any) -> dict[str, Any]:
    frame = await ws.recv()
    assert isinstance(frame, str), frame
    return json.loads(frame)


@pytest.fixture
async def official(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[fal_client.AsyncClient]:
    """fal_client pointed at the emulator (its REST and realtime hosts are module constants)."""
    monkeypatch.setattr(fal_client_module, "REST_URL", f"{emulator.base_url}/rest")
    monkeypatch.setattr(fal_client_module, "REALTIME_URL_FORMAT", f"{emulator.base_url.replace('http', 'ws')}/run/")
    client = fal_client.AsyncClient(key=KEY)
    yield client
    await (await client._client).aclose()  # fal_client has no public close


async def test_official_client_two_frames_two_results_in_order(official: fal_client.AsyncClient) -> None:
    async with official.realtime(LCM) as connection:
        await connection.send({"prompt": "a red fox", "seed": 1, "request_id": "first", "sync_mode": False})
        await connection.send({"prompt": "a blue whale", "seed": 2, "request_id": "second"})
        first = await connection.recv()
        second = await connection.recv()
    assert first is not None and second is not None
    assert (first["request_id"], first["prompt"], first["seed"]) == ("first", "a red fox", 1)
    assert (second["request_id"], second["prompt"], second["seed"]) == ("second", "a blue whale", 2)
    async with httpx2.AsyncClient() as http:  # result images live on the emulator's CDN
        image = await http.get(first["images"][0]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


async def test_key_header_instead_of_token(official: fal_client.AsyncClient) -> None:
    async with official.realtime(LCM, use_jwt=False) as connection:
        await connection.send({"prompt": "a lighthouse"})
        result = await connection.recv()
    assert result is not None and result["prompt"] == "a lighthouse"
    assert "request_id" not in result


async def test_validation_error_frame_keeps_the_session(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    jwt = await token(client, "fast-lcm-diffusion")
    async with websockets.connect(ws_url(emulator, LCM, fal_jwt_token=jwt)) as ws:
        await ws.send(msgpack.packb({"num_inference_steps": 99, "request_id": "bad"}, use_bin_type=True))
        error = await recv_json(ws)
        assert error["type"] == "x-fal-error" and error["error"] == "VALIDATION_ERROR"
        assert error["request_id"] == "bad"
        assert {tuple(d["loc"]) for d in error["detail"]} == {("body", "prompt"), ("body", "num_inference_steps")}
        await ws.send(json.dumps({"prompt": "text frames work too"}))  # JSON text input is accepted as well
        result = msgpack.unpackb(await ws.recv(), raw=False)
        assert result["prompt"] == "text frames work too"
        await ws.send(b"\xc1")  # not msgpack
        assert (await recv_json(ws))["error"] == "INVALID_MESSAGE"
        await ws.send(msgpack.packb({"prompt": "still open"}, use_bin_type=True))
        assert msgpack.unpackb(await ws.recv(), raw=False)["prompt"] == "still open"


async def test_bad_wrong_app_or_expired_token_is_unauthorized(
    emulator: EmulatorServer, client: httpx2.AsyncClient, official: fal_client.AsyncClient
) -> None:
    other_app = await token(client, "flux")
    short = await token(client, "fast-lcm-diffusion", seconds=1)
    forged = other_app.rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    cases = (("not.a.jwt", "malformed"), (forged, "signature"), (other_app, "does not allow"), (None, "missing"))
    for jwt, reason in cases:
        query = {"fal_jwt_token": jwt} if jwt else {}
        async with websockets.connect(ws_url(emulator, LCM, **query)) as ws:
            error = await recv_json(ws)
            assert error["type"] == "x-fal-error" and error["error"] == "Unauthorized", error
            assert reason in error["reason"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    await anyio.sleep(1.1)
    monkeypatched_url = fal_client_module._build_realtime_url(LCM, short, None)
    async with websockets.connect(monkeypatched_url) as ws:
        connection = fal_client_module.AsyncRealtimeConnection(ws)
        with pytest.raises(RealtimeError) as raised:
            await connection.recv()
    assert raised.value.error == "Unauthorized" and "expired" in raised.value.reason


async def test_models_without_realtime_and_bad_buffering(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    jwt = await token(client, "flux", "fast-lcm-diffusion")
    async with websockets.connect(ws_url(emulator, "fal-ai/flux/dev", fal_jwt_token=jwt)) as ws:
        error = await recv_json(ws)
    assert error["error"] == "NOT_FOUND" and "no realtime" in error["reason"]
    async with websockets.connect(ws_url(emulator, LCM, fal_jwt_token=jwt, max_buffering="0")) as ws:
        assert (await recv_json(ws))["error"] == "INVALID_ARGUMENT"
    async with websockets.connect(ws_url(emulator, LCM, fal_jwt_token=jwt, max_buffering="4")) as ws:
        await ws.send(msgpack.packb({"prompt": "buffered"}, use_bin_type=True))
        assert msgpack.unpackb(await ws.recv(), raw=False)["prompt"] == "buffered"


async def test_token_route_validates_and_needs_a_key(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    assert (await client.post("/rest/tokens/", json={"allowed_apps": []})).status_code == 422
    assert (await client.post("/rest/tokens/", json={"allowed_apps": ["x"], "token_expiration": 0})).status_code == 422
    async with httpx2.AsyncClient(base_url=emulator.base_url) as anonymous:
        denied = await anonymous.post("/rest/tokens/", json={"allowed_apps": ["fast-lcm-diffusion"]})
    assert denied.status_code == 401
