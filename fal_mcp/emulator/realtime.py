"""fal's realtime WebSocket: short-lived app tokens from ``POST /rest/tokens/`` and ``…/realtime`` sessions.

A session takes one input per frame (binary msgpack, or text JSON), runs the model's ``realtime``
and answers each with one binary msgpack frame, in order. Errors are text frames
``{"type": "x-fal-error", "error": …, "reason": …}`` as fal's runtime sends them; a bad input leaves
the session open. Like fal's ``max_buffering``, at most that many inputs wait; a newer input pushes
out the oldest waiting one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fal_mcp.emulator.models import ModelError
from fal_mcp.emulator.run import count_submission
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import InvalidEndpointIdError
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.models import EmulatedModel
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

# Tokens are HS256 JWTs signed with a key that lives as long as the process.
_SECRET = secrets.token_bytes(32)
DEFAULT_TOKEN_SECONDS = 120  # fal_client's and the JS client's default
MAX_TOKEN_SECONDS = 24 * 3600
MAX_BUFFERING = (1, 60)  # fal_client's accepted range
POLICY_VIOLATION = 1008


class TokenError(Exception):
    """Why a realtime token was refused (becomes the ``reason`` of an ``Unauthorized`` frame)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(signing_input: bytes) -> bytes:
    return hmac.new(_SECRET, signing_input, hashlib.sha256).digest()


def issue_token(allowed_apps: list[str], expiration_seconds: int = DEFAULT_TOKEN_SECONDS) -> str:
    """A JWT (HS256) naming the apps it may open and when it expires."""
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": "fal-emulator", "allowed_apps": allowed_apps, "iat": now, "exp": now + expiration_seconds}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{_b64url(_sign(signing_input))}"


def verify_token(token: str, endpoint: str) -> dict[str, Any]:
    """The token's claims if it is ours, unexpired and allows ``endpoint``'s app; else :class:`TokenError`.

    ``allowed_apps`` holds aliases (``fast-lcm-diffusion``) as fal's clients send them; ``owner/alias`` also passes.
    Shared with any route that accepts ``?fal_jwt_token=`` (e.g. client-side streaming).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header, payload, signature = parts
    try:
        valid = hmac.compare_digest(_b64url_decode(signature), _sign(f"{header}.{payload}".encode()))
        claims = json.loads(_b64url_decode(payload))
    except ValueError as exc:
        raise TokenError("malformed token") from exc
    if not valid or not isinstance(claims, dict):
        raise TokenError("invalid token signature")
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        raise TokenError("token expired")
    try:
        app = EndpointId.parse(endpoint)
    except InvalidEndpointIdError as exc:
        raise TokenError(f"invalid app {endpoint!r}") from exc
    allowed = claims.get("allowed_apps") or []
    if app.alias not in allowed and f"{app.owner}/{app.alias}" not in allowed:
        raise TokenError(f"token does not allow app {app.alias!r}")
    return claims


def _validation_error(message: str, loc: list[str]) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", *loc], "msg": message, "type": "value_error"}]}, status_code=422)


def rest_routes(state: EmulatorState) -> list[BaseRoute]:
    """``POST /tokens/`` on the REST host: Key auth, answers a bare JSON string (the JWT)."""

    async def create_token(request: Request) -> Response:
        if (denied := state.auth_error(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _validation_error("Input should be a valid JSON object", [])
        if not isinstance(body, dict):
            return _validation_error("Input should be a valid JSON object", [])
        apps = body.get("allowed_apps")
        if not isinstance(apps, list) or not apps or not all(isinstance(a, str) and a for a in apps):
            return _validation_error("allowed_apps must be a non-empty list of app names", ["allowed_apps"])
        expiration = body.get("token_expiration", DEFAULT_TOKEN_SECONDS)
        if isinstance(expiration, bool) or not isinstance(expiration, int) or not 1 <= expiration <= MAX_TOKEN_SECONDS:
            return _validation_error(
                f"token_expiration must be an integer between 1 and {MAX_TOKEN_SECONDS}", ["token_expiration"]
            )
        return JSONResponse(issue_token(apps, expiration))

    return [Route("/tokens/", create_token, methods=["POST"]), Route("/tokens", create_token, methods=["POST"])]


class _Inbox:
    """Inputs waiting for the model; with a bound, a new input drops the oldest waiting one (fal's deque)."""

    def __init__(self, bound: int | None) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=bound)
        self.closed = False
        self._event = anyio.Event()

    def put(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        self._event.set()

    def close(self) -> None:
        """The client left: nothing waiting can be answered any more."""
        self.closed = True
        self.items.clear()
        self._event.set()

    async def get(self) -> dict[str, Any] | None:
        while not self.items:
            if self.closed:
                return None
            self._event = anyio.Event()
            await self._event.wait()
        return self.items.popleft()


def _error_frame(error: str, reason: str, **extra: Any) -> str:
    return json.dumps({"type": "x-fal-error", "error": error, "reason": reason, **extra})


def _decode(message: dict[str, Any]) -> dict[str, Any]:
    """One input frame → dict; binary is msgpack, text is JSON. ValueError when it is neither or not an object."""
    if message.get("bytes") is not None:
        try:
            data = msgpack.unpackb(message["bytes"], raw=False)
        except (msgpack.UnpackException, ValueError) as exc:
            raise ValueError(f"binary frames must be msgpack: {exc}") from exc
    else:
        data = json.loads(message.get("text") or "")
    if not isinstance(data, dict):
        raise ValueError("each message must be an object of model inputs")
    return data


def _credentials_error(state: EmulatorState, websocket: WebSocket, endpoint: str) -> str | None:
    """Why this handshake may not open ``endpoint`` (None when it may): a token, or a Key header."""
    token = websocket.query_params.get("fal_jwt_token")
    if token:
        try:
            verify_token(token, endpoint)
        except TokenError as exc:
            return str(exc)
        return None
    if state.auth_error(websocket) is not None:
        return "missing credentials: pass ?fal_jwt_token=<token from /tokens/> or an Authorization: Key header"
    return None


def routes(state: EmulatorState) -> list[BaseRoute]:
    """``/{[ns/]owner/alias[/path]}/realtime`` WebSocket, mounted in the run host before its catch-all."""

    async def session(websocket: WebSocket) -> None:
        endpoint = websocket.path_params["endpoint"].strip("/")
        await websocket.accept()
        refusal = _credentials_error(state, websocket, endpoint)
        if refusal is not None:
            await websocket.send_text(_error_frame("Unauthorized", refusal, status="error"))
            await websocket.close(POLICY_VIOLATION)
            return
        model = state.models.get(endpoint)
        if model is None or not model.supports_realtime:
            reason = (
                f"Application {endpoint!r} not found" if model is None else f"{endpoint!r} has no realtime endpoint"
            )
            await websocket.send_text(_error_frame("NOT_FOUND", reason))
            await websocket.close(POLICY_VIOLATION)
            return
        raw_buffering = websocket.query_params.get("max_buffering")
        bound: int | None = None
        if raw_buffering is not None:
            bound = int(raw_buffering) if raw_buffering.isdigit() else 0
            if not MAX_BUFFERING[0] <= bound <= MAX_BUFFERING[1]:
                await websocket.send_text(
                    _error_frame("INVALID_ARGUMENT", "max_buffering must be between {} and {}".format(*MAX_BUFFERING))
                )
                await websocket.close(POLICY_VIOLATION)
                return
        inbox = _Inbox(bound)
        base_url = state.public_base(websocket)

        async def read() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    inbox.close()
                    return
                inbox.put(message)  # type: ignore[arg-type]

        async def answer() -> None:
            while (message := await inbox.get()) is not None:
                frame = await _handle(model, message, state, base_url)
                if isinstance(frame, str):
                    await websocket.send_text(frame)
                else:
                    await websocket.send_bytes(frame)

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read)
                await answer()
                tasks.cancel_scope.cancel()
        except* WebSocketDisconnect:
            pass  # the client left; nothing more to answer

    return [WebSocketRoute("/{endpoint:path}/realtime", session)]


async def _handle(model: EmulatedModel, message: dict[str, Any], state: EmulatorState, base_url: str) -> bytes | str:
    """One input → the reply frame: msgpack result, or a JSON ``x-fal-error`` text frame."""
    try:
        data = _decode(message)
    except ValueError as exc:
        return _error_frame("INVALID_MESSAGE", str(exc))
    request_id = data.pop("request_id", None)
    echo = {"request_id": request_id} if request_id is not None else {}
    count_submission(state, model.info.endpoint_id, data)  # each frame is a paid inference
    try:
        model.validate(data)
        ctx = state.make_context(str(uuid.uuid4()), base_url)
        result = await model.realtime(model.with_defaults(data), ctx)
    except ModelError as exc:
        error = "VALIDATION_ERROR" if exc.status_code == 422 else (exc.error_type or "INTERNAL_ERROR").upper()
        detail = exc.body.get("detail") if isinstance(exc.body, dict) else exc.body
        reason = detail if isinstance(detail, str) else json.dumps(detail)
        return _error_frame(error, reason, detail=detail, **echo)
    except Exception as exc:  # a model bug must not kill the session silently
        log.exception("realtime model failed", endpoint=model.info.endpoint_id)
        return _error_frame("INTERNAL_ERROR", str(exc), **echo)
    return msgpack.packb({**result, **echo}, use_bin_type=True)
