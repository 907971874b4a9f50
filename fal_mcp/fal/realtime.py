"""fal's realtime WebSocket (fal-protocol.md §6): short-lived app tokens, msgpack frames in and out.

The token rides in the URL's query (``fal_jwt_token``), so it is registered as a secret the moment it
arrives; URLs in logs and errors carry no query string.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx2
import msgpack
import wsproto.events
from httpx2.websockets import (
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketNetworkError,
    WebSocketUpgradeError,
)

from fal_mcp.fal._http import FalHTTP
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import (
    AuthenticationError,
    FalAPIError,
    FalConnectionError,
    FalError,
    FalTimeoutError,
    make_api_error,
)
from fal_mcp.fal.retry import RetryMode
from fal_mcp.log import get_logger
from fal_mcp.redact import remember_caller_secret

log = get_logger(__name__)

TOKEN_EXPIRATION_SECONDS = 120  # what fal's clients ask for
TOKEN_REFRESH_FRACTION = 0.9  # reuse a token for 90 % of its life, like the JS client
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # results may carry images as bytes or data URIs
DEFAULT_RECV_TIMEOUT = 120.0

# x-fal-error codes → the HTTP status whose error class describes them best.
_ERROR_STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "validation_error": 422,
    "invalid_argument": 400,
    "invalid_message": 400,
    "timeout": 504,
}


def _parse_token(data: Any) -> str:
    """A bare JSON string (fal's answer), or ``{"token": …}`` / ``{"detail": …}`` from older proxies."""
    if isinstance(data, str) and data:
        return data
    if isinstance(data, Mapping):
        for key in ("token", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    raise FalAPIError("fal's realtime token answer has no token in it")


def realtime_error(frame: Mapping[str, Any]) -> FalAPIError:
    """The exception for an ``x-fal-error`` (or ``{"status": "error"}``) text frame."""
    code = str(frame.get("error") or "UNKNOWN_ERROR")
    reason = frame.get("reason")
    detail = frame.get("detail")
    if detail is None:
        detail = f"{code}: {reason}" if reason else code
    status = _ERROR_STATUS.get(code.lower(), 500)
    error = make_api_error(status, {}, {"detail": detail, "error_type": code}, json.dumps(dict(frame)))
    error.body = dict(frame)
    return error


@dataclass
class _Token:
    value: str
    refresh_at: float


class RealtimeConnection:
    """One open realtime session: :meth:`send` an input, :meth:`recv` its output, in order."""

    def __init__(self, ws: httpx2.websockets.AsyncWebSocketSession, endpoint_id: str, recv_timeout: float) -> None:
        self._ws = ws
        self.endpoint_id = endpoint_id
        self.recv_timeout = recv_timeout

    async def send(self, input: Mapping[str, Any]) -> None:
        try:
            await self._ws.send_bytes(msgpack.packb(dict(input), use_bin_type=True))
        except HTTPXWSException as exc:
            raise _connection_error(exc, self.endpoint_id) from None

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next result; ``x-fal-message`` frames are skipped, ``x-fal-error`` frames raise."""
        wait = self.recv_timeout if timeout is None else timeout
        while True:
            try:
                event = await self._ws.receive(timeout=wait)
            except TimeoutError:
                raise FalTimeoutError(
                    f"fal's realtime session for {self.endpoint_id} sent nothing for {wait:g} s"
                ) from None
            except HTTPXWSException as exc:
                raise _connection_error(exc, self.endpoint_id) from None
            if isinstance(event, wsproto.events.BytesMessage):
                try:
                    data = msgpack.unpackb(bytes(event.data), raw=False)
                except (msgpack.UnpackException, ValueError) as exc:
                    raise FalAPIError("fal's realtime session sent a binary frame that is not msgpack") from exc
            elif isinstance(event, wsproto.events.TextMessage):
                try:
                    data = json.loads(event.data)
                except ValueError:
                    raise FalAPIError(
                        f"fal's realtime session sent text that is not JSON: {event.data[:200]!r}"
                    ) from None
                if isinstance(data, Mapping):
                    if data.get("type") == "x-fal-message":
                        continue
                    if data.get("type") == "x-fal-error" or data.get("status") == "error":
                        raise realtime_error(data)
            else:
                continue
            if not isinstance(data, dict):
                raise FalAPIError("fal's realtime session sent a result that is not an object", body=data)
            return data

    async def run(self, input: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        await self.send(input)
        return await self.recv(timeout)


def _connection_error(exc: BaseException, endpoint_id: str) -> FalConnectionError:
    if isinstance(exc, WebSocketDisconnect):
        reason = f": {exc.reason}" if exc.reason else ""
        return FalConnectionError(f"fal closed the realtime session for {endpoint_id} (code {exc.code}{reason})")
    if isinstance(exc, WebSocketNetworkError):
        return FalConnectionError(f"the realtime connection to fal for {endpoint_id} broke")
    return FalConnectionError(f"realtime session for {endpoint_id} failed: {type(exc).__name__}")


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """httpx2's session runs a task group, which wraps errors escaping it; hand back the one that matters."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class RealtimeAPI:
    """Tokens (cached per app for most of their life) and WebSocket sessions on the run host."""

    def __init__(self, http: FalHTTP, *, token_expiration: int = TOKEN_EXPIRATION_SECONDS) -> None:
        self._http = http
        self.token_expiration = token_expiration
        self._tokens: dict[str, _Token] = {}
        self._lock = anyio.Lock()

    async def token(self, endpoint_id: str) -> str:
        """A JWT that may open ``endpoint_id``'s app: ``POST {rest}/tokens/``, reused until 90 % of its life."""
        alias = EndpointId.parse(endpoint_id).alias
        async with self._lock:
            cached = self._tokens.get(alias)
            if cached is not None and time.monotonic() < cached.refresh_at:
                return cached.value
            data = await self._http.request_json(
                "POST",
                self._http.url("rest", "tokens/"),
                mode=RetryMode.IDEMPOTENT,
                json_body={"allowed_apps": [alias], "token_expiration": self.token_expiration},
            )
            value = _parse_token(data)
            remember_caller_secret(value)  # one per connection and caller: bounded, see fal_mcp.redact
            lifetime = self.token_expiration * TOKEN_REFRESH_FRACTION
            self._tokens[alias] = _Token(value, time.monotonic() + lifetime)
            return value

    def _url(self, endpoint: EndpointId, path: str) -> str:
        base = self._http.url("run", str(endpoint))
        return f"{base}/{path.strip('/')}" if path.strip("/") else base

    @asynccontextmanager
    async def connect(
        self,
        endpoint_id: str,
        *,
        path: str = "realtime",
        max_buffering: int | None = None,
        recv_timeout: float = DEFAULT_RECV_TIMEOUT,
    ) -> AsyncIterator[RealtimeConnection]:
        """``async with client.realtime.connect("fal-ai/fast-lcm-diffusion") as conn: await conn.run({...})``."""
        endpoint = EndpointId.parse(endpoint_id)
        if max_buffering is not None and not 1 <= max_buffering <= 60:
            raise ValueError(f"max_buffering must be between 1 and 60, got {max_buffering}")
        token = await self.token(str(endpoint))
        query = {"fal_jwt_token": token}
        if max_buffering is not None:
            query["max_buffering"] = str(max_buffering)
        url = self._url(endpoint, path)
        if not self._http.hosts.owns_url(url):
            raise FalError(f"refusing to open a realtime session outside the configured fal hosts: {url}")
        self._http.requests_sent += 1
        try:
            async with self._http.client.websocket(
                f"{url}?{urlencode(query)}",
                max_message_size_bytes=MAX_MESSAGE_BYTES,
                timeout=httpx2.Timeout(30.0),
            ) as ws:
                log.debug("fal.realtime.open", endpoint_id=str(endpoint))
                yield RealtimeConnection(ws, str(endpoint), recv_timeout)
        except BaseExceptionGroup as group:
            error = _unwrap(group)
            if isinstance(error, AuthenticationError):
                self._tokens.pop(endpoint.alias, None)  # e.g. expired early: the next connect gets a fresh one
            raise error from None
        except AuthenticationError:
            self._tokens.pop(endpoint.alias, None)
            raise
        except WebSocketUpgradeError as exc:
            response = exc.response
            raise make_api_error(response.status_code, response.headers, None, f"HTTP {response.status_code}") from None
        except HTTPXWSException as exc:
            raise _connection_error(exc, str(endpoint)) from None
        except httpx2.TransportError as exc:
            raise self._http.transport_error(exc, url) from None

    async def run_many(
        self,
        endpoint_id: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        recv_timeout: float = DEFAULT_RECV_TIMEOUT,
        on_output: Callable[[int, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> list[dict[str, Any]]:
        """Send every input over ONE session and return the outputs in order.

        One input at a time: fal's realtime apps may drop inputs that wait while the runner is busy
        (``max_buffering``), so pipelining could lose some. ``on_output(n, output)`` follows each (n from 1).
        """
        outputs: list[dict[str, Any]] = []
        async with self.connect(endpoint_id, recv_timeout=recv_timeout) as conn:
            for item in inputs:
                outputs.append(await conn.run(item))
                if on_output is not None:
                    await on_output(len(outputs), outputs[-1])
        return outputs
