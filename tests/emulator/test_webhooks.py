"""Webhooks over real loopback: signed deliveries verified against the JWKS route, retries, permanent failures."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.emulator.webhooks import WebhookDelivery, WebhookSender
from fal_mcp.fal.webhooks import verify_webhook
from tests.emulator.conftest import MakeEmulator, client_for, submit, wait_completed
from tests.realdata import shared_data

pytestmark = pytest.mark.anyio


class RawReceiver:
    """A loopback HTTP server keeping each POST's raw body and headers; answers from a script, then 200."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[tuple[dict[str, str], bytes]] = []

        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            status = self.script.pop(0) if self.script else 200
            headers = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= status < 400 else None
            return Response(status_code=status, headers=headers)

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> RawReceiver:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., RawReceiver]]:
    receivers: list[RawReceiver] = []

    def make(script: list[int] | None = None) -> RawReceiver:
        receivers.append(RawReceiver(script).__enter__())
        return receivers[-1]

    yield make
    for receiver in receivers:
        receiver.__exit__()


async def finished(server: EmulatorServer, request_id: str, timeout: float = 10.0) -> WebhookDelivery:
    """The emulator's delivery record for ``request_id`` once it was acknowledged or given up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for delivery in server.state.webhooks.deliveries:
            if delivery.request_id == request_id and delivery.outcome != "pending":
                return delivery
        await anyio.sleep(0.01)
    raise AssertionError(f"no finished webhook for {request_id}")


async def test_signed_delivery_verifies_against_the_jwks(
    make_emulator: MakeEmulator, make_receiver: Callable[..., RawReceiver]
) -> None:
    server, receiver = make_emulator(), make_receiver()
    async with client_for(server) as http:
        queued = await submit(
            http, "fal-ai/flux/dev", {"prompt": "a heron", "seed": 3}, params={"fal_webhook": receiver.url}
        )
        await wait_completed(http, queued["status_url"])
        result = (await http.get(queued["response_url"])).json()
        jwks = (await http.get("/rest/.well-known/jwks.json", headers={"Authorization": ""})).json()
        delivery = await finished(server, queued["request_id"])

    assert delivery.outcome == "delivered"
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    document = json.loads(body)
    assert document == {
        "request_id": queued["request_id"],
        "gateway_request_id": queued["request_id"],
        "status": "OK",
        "payload": result,
    }
    assert headers["x-fal-webhook-request-id"] == queued["request_id"]
    assert headers["x-fal-webhook-user-id"]
    assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 30
    assert jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["crv"] == "Ed25519"

    assert verify_webhook(headers, body, jwks)
    assert verify_webhook({k.upper(): v for k, v in headers.items()}, body, jwks)  # header case does not matter
    assert not verify_webhook(headers, body.replace(b'"OK"', b'"ERROR"'), jwks)  # tampered body
    assert not verify_webhook({**headers, "x-fal-webhook-request-id": "someone-else"}, body, jwks)
    stranger = WebhookSender(EmulatorConfig()).jwks()
    assert not verify_webhook(headers, body, stranger)  # another key set
    late = int(headers["x-fal-webhook-timestamp"]) + 301
    assert not verify_webhook(headers, body, jwks, now=late)  # outside the 300 s window
    assert verify_webhook(headers, body, jwks, now=late - 2)
    assert not verify_webhook({}, body, jwks)


async def test_a_500_is_retried_until_acknowledged(
    make_emulator: MakeEmulator, make_receiver: Callable[..., RawReceiver]
) -> None:
    server, receiver = make_emulator(), make_receiver([500, 503])
    async with client_for(server) as http:
        queued = await submit(http, "emulator/slow", {"seconds": 0.1}, params={"fal_webhook": receiver.url})
        jwks = (await http.get("/rest/.well-known/jwks.json")).json()
        delivery = await finished(server, queued["request_id"])
    assert delivery.outcome == "delivered"
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]
    assert len(receiver.received) == 3
    bodies = {body for _, body in receiver.received}
    assert len(bodies) == 1  # the same document each time, each attempt validly signed
    assert all(verify_webhook(headers, body, jwks) for headers, body in receiver.received)


async def test_redirect_is_a_permanent_failure(
    make_emulator: MakeEmulator, make_receiver: Callable[..., RawReceiver]
) -> None:
    server, receiver = make_emulator(), make_receiver([307])
    async with client_for(server) as http:
        queued = await submit(http, "emulator/slow", {"seconds": 0.1}, params={"fal_webhook": receiver.url})
        delivery = await finished(server, queued["request_id"])
    assert delivery.outcome == "failed"
    assert [a.status_code for a in delivery.attempts] == [307]
    await anyio.sleep(0.1)
    assert len(receiver.received) == 1


async def test_failed_request_sends_an_error_webhook(
    make_emulator: MakeEmulator, make_receiver: Callable[..., RawReceiver]
) -> None:
    server, receiver = make_emulator(), make_receiver()
    async with client_for(server) as http:
        queued = await submit(
            http, "emulator/slow", {"seconds": 0.1, "fail": True}, params={"fal_webhook": receiver.url}
        )
        await wait_completed(http, queued["status_url"])
        result = await http.get(queued["response_url"])
        await finished(server, queued["request_id"])
    assert result.status_code == 500
    document: dict[str, Any] = json.loads(receiver.received[0][1])
    assert document["status"] == "ERROR"
    assert document["error"] == "Invalid status code: 500"
    assert document["payload"] == result.json()
    # The keys of a real error webhook fal sent (fal-js issue 153), but payload_error: ours had JSON.
    real = json.loads((shared_data() / "fal-platform" / "webhook_error_payload__fal-js_issue_153.json").read_text())
    assert set(document) == set(real["response"]) - {"payload_error"}


async def test_unreachable_target_is_retried_then_given_up(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.webhooks.max_attempts = 3
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    async with client_for(server) as http:
        queued = await submit(http, "emulator/slow", {"seconds": 0.1}, params={"fal_webhook": dead})
        delivery = await finished(server, queued["request_id"])
    assert delivery.outcome == "failed"
    assert len(delivery.attempts) == 3
    assert all(a.status_code is None and a.error for a in delivery.attempts)
    gaps = [b.at - a.at for a, b in zip(delivery.attempts, delivery.attempts[1:], strict=False)]
    assert gaps[1] > gaps[0]  # backoff grows (1 then 2 simulated seconds)


def test_verify_rejects_malformed_signatures() -> None:
    sender = WebhookSender(EmulatorConfig())
    body = b'{"request_id": "r"}'
    headers = sender.sign("r", body)
    assert verify_webhook(headers, body, sender.jwks())
    assert not verify_webhook({**headers, "X-Fal-Webhook-Signature": "zz"}, body, sender.jwks())
    assert not verify_webhook({**headers, "X-Fal-Webhook-Timestamp": "soon"}, body, sender.jwks())
    other = Ed25519PrivateKey.generate()
    forged = {**headers, "X-Fal-Webhook-Signature": other.sign(b"anything").hex()}
    assert not verify_webhook(forged, body, sender.jwks())
    assert not verify_webhook(
        headers, body, {"keys": [{"kty": "RSA", "n": "x"}, {"kty": "OKP", "crv": "Ed25519", "x": "!!"}]}
    )
