"""Webhook delivery like fal's: signed POSTs of a finished request's result, retried with backoff.

The emulator signs with its own Ed25519 key (made per process) and publishes the public half at
``/rest/.well-known/jwks.json``, so a receiver verifies it exactly as it would verify fal
(:func:`fal_mcp.fal.webhooks.verify_webhook`). Unlike fal, private and loopback targets are
delivered to: that is where tests and local receivers listen.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.fal.webhooks import signed_message
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

# Who the emulator says owns every request (fal sends the account's user id).
EMULATOR_USER_ID = "emulator-user"
USER_AGENT = "fal-emulator-webhook/1"

DeliveryStatus = Literal["OK", "ERROR"]
Outcome = Literal["pending", "delivered", "failed"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class DeliveryAttempt:
    """One POST: the receiver's status code, or the transport error that stood in for one."""

    at: float
    status_code: int | None = None
    error: str | None = None


@dataclass
class WebhookDelivery:
    """Everything about one webhook, kept so tests can see what was sent and how it went."""

    url: str
    request_id: str
    gateway_request_id: str
    status: DeliveryStatus
    body: bytes
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # of the last attempt (each attempt is re-signed)
    outcome: Outcome = "pending"

    def json(self) -> Any:
        return json.loads(self.body)


def webhook_body(
    request_id: str, gateway_request_id: str, status: DeliveryStatus, payload: Any, error: str | None = None
) -> bytes:
    """fal's webhook JSON; a payload that is not JSON becomes ``null`` + ``payload_error`` as fal does."""
    document: dict[str, Any] = {"request_id": request_id, "gateway_request_id": gateway_request_id, "status": status}
    if error is not None:
        document["error"] = error
    try:
        json.dumps(payload)
        document["payload"] = payload
    except (TypeError, ValueError) as exc:
        document["payload"] = None
        document["payload_error"] = (
            "Response payload is not JSON serializable. Either return a JSON serializable object "
            f"or use the queue endpoint to retrieve the response. Error: {exc}"
        )
    return json.dumps(document).encode()


class WebhookSender:
    """Signs and delivers webhooks; ``deliveries`` is the log of everything it tried.

    ``deliver`` returns only when the webhook was acknowledged or given up on, so callers run it in
    the background (``state.spawn``). Backoff between attempts doubles from ``backoff_base_seconds`` up
    to ``backoff_max_seconds``, both scaled by ``config.time_scale``.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        user_id: str = EMULATOR_USER_ID,
        max_attempts: int = 10,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 120.0,
    ) -> None:
        self.config = config
        self.user_id = user_id
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._key = Ed25519PrivateKey.generate()
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._public_x = _b64url(public)
        self.kid = hashlib.sha256(public).hexdigest()[:16]
        self.deliveries: list[WebhookDelivery] = []

    def jwks(self) -> dict[str, Any]:
        """The public key set a receiver verifies against (fal's ``/.well-known/jwks.json`` shape)."""
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": self._public_x, "kid": self.kid, "use": "sig", "alg": "EdDSA"}
            ]
        }

    def sign(self, request_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The four ``X-Fal-Webhook-*`` headers for ``body``, signed now (or at ``timestamp``)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(signed_message(request_id, self.user_id, stamp, body))
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": signature.hex(),
        }

    def backoff(self, attempt: int) -> float:
        """Real seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return self.config.scaled(min(self.backoff_base_seconds * 2 ** (attempt - 1), self.backoff_max_seconds))

    async def deliver(
        self,
        url: str,
        request_id: str,
        gateway_request_id: str,
        status: DeliveryStatus,
        payload: Any,
        error: str | None = None,
    ) -> WebhookDelivery:
        """POST the webhook until a 2xx; 3xx is a permanent failure; anything else is retried."""
        delivery = WebhookDelivery(
            url=url,
            request_id=request_id,
            gateway_request_id=gateway_request_id,
            status=status,
            body=webhook_body(request_id, gateway_request_id, status, payload, error),
        )
        self.deliveries.append(delivery)
        timeout = httpx2.Timeout(self.config.webhook_timeout_seconds)
        async with httpx2.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            for attempt in range(1, self.max_attempts + 1):
                delivery.headers = {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    **self.sign(request_id, delivery.body),
                }
                record = DeliveryAttempt(at=time.time())
                delivery.attempts.append(record)
                try:
                    response = await client.post(url, content=delivery.body, headers=delivery.headers)
                    record.status_code = response.status_code
                except httpx2.HTTPError as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                log.info(
                    "webhook attempt",
                    request_id=request_id,
                    attempt=attempt,
                    status_code=record.status_code,
                    error=record.error,
                )
                if record.status_code is not None and 200 <= record.status_code < 300:
                    delivery.outcome = "delivered"
                    return delivery
                if record.status_code is not None and 300 <= record.status_code < 400:
                    break
                if attempt < self.max_attempts:
                    await anyio.sleep(self.backoff(attempt))
        delivery.outcome = "failed"
        log.warning("webhook not delivered", request_id=request_id, attempts=len(delivery.attempts))
        return delivery


def rest_routes(state: EmulatorState) -> list[BaseRoute]:
    """``GET /.well-known/jwks.json`` on the REST host (public, no key)."""

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(state.webhooks.jwks())

    return [Route("/.well-known/jwks.json", jwks, methods=["GET"])]
