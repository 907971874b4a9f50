"""Streamable HTTP: the MCP app behind bearer auth and DNS-rebinding protection, served by uvicorn.

Two ways to run it:

- shared key: the server's own fal key pays for every call, so with ``FAL_MCP_HTTP_TOKEN`` set every
  request must carry ``Authorization: Bearer <token>``; without a token it may only bind loopback.
- per-user (``--per-user``): each caller sends its own fal key (``Authorization: Bearer <FAL_KEY>``, as
  fal's hosted MCP server takes it, or ``X-Fal-Key``); ``ServerState.fal_for`` keeps each key's client
  and ledger rows apart. With a server token as well, the bearer is the token and ``X-Fal-Key`` the key.
  Off loopback the token is required here too: a key only says who pays, not who may use the server.

In per-user mode a key must be shaped like a fal key before anything keeps it (see
:func:`~fal_mcp.fal.auth.plausible_fal_key`), and each MCP session is bound to a digest of the key that
opened it: a request for that session with another key is answered 404, like an unknown session.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fal_mcp import __version__
from fal_mcp.config import ConfigError, Settings
from fal_mcp.fal.auth import header_safe, plausible_fal_key
from fal_mcp.log import get_logger
from fal_mcp.redact import register_secret, remember_caller_secret
from fal_mcp.server.state import FAL_KEY_HEADER, caller_owner, fal_key_from_headers

if TYPE_CHECKING:
    from fal_mcp.emulator.embedded import EmbeddedEmulator

log = get_logger(__name__)

MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
TOKEN_ENV = "FAL_MCP_HTTP_TOKEN"
MIN_TOKEN_LENGTH = 16
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")
SHUTDOWN_GRACE_SECONDS = 3
# Open MCP sessions at once (the SDK's default is 10,000). Each holds 40-50 KiB (SDK session, transport and
# streams) until it is deleted or idle for 30 minutes: 500 bound what callers that never close their sessions
# can hold at ~25 MiB (1,000 measured +39 to +49 MiB); past it, new sessions get 503 until some end.
MAX_SESSIONS = 500


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``): reachable from this machine only."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, *, token: str | None, per_user: bool) -> None:
    """Refuse set-ups that would let anyone on the network spend the server's fal key.

    Raises :class:`ConfigError` with what to do instead.
    """
    if token is not None:
        if not token.strip():
            raise ConfigError(f"{TOKEN_ENV} is set but blank: set it to a long random string, or unset it")
        if not header_safe(token) or any(ch.isspace() for ch in token):
            # Clients send it as 'Authorization: Bearer <token>': spaces are trimmed, control characters refused.
            raise ConfigError(
                f"{TOKEN_ENV} must be printable ASCII without spaces (clients send it in an HTTP header); "
                "use a long random string, e.g. from 'openssl rand -hex 32'"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            # Short tokens are guessable, and too short for the log redaction to recognise.
            raise ConfigError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters (use a long random string)")
    if is_loopback(host) or token is not None:
        return
    if per_user:
        raise ConfigError(
            f"refusing to serve --per-user on {host!r} without {TOKEN_ENV}: a fal key says who pays, not who may "
            f"use this server, and anyone who can reach it could open sessions with made-up keys. Set {TOKEN_ENV} "
            "to a long random string (clients then send 'Authorization: Bearer <token>' and their key as "
            "'X-Fal-Key: <FAL_KEY>'), or bind 127.0.0.1."
        )
    raise ConfigError(
        f"refusing to serve on {host!r} without authentication: anyone who can reach it could spend your fal key. "
        f"Set {TOKEN_ENV} to a long random string (clients then send 'Authorization: Bearer <token>'), "
        "use --per-user (each caller sends its own fal key), or bind 127.0.0.1."
    )


def _host_entry(host: str) -> str:
    """A host as it appears in a ``Host`` header (IPv6 literals in brackets)."""
    host = host.strip()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def transport_security(host: str, allowed_hosts: list[str]) -> TransportSecuritySettings:
    """Accept loopback ``Host``/``Origin`` headers, the concrete bind address and each ``--allowed-host``.

    A ``Host`` an attacker's DNS points at us (DNS rebinding) is refused with 421 by the SDK.
    """
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if host.strip() not in WILDCARD_HOSTS:
        hosts.append(_host_entry(host))
    hosts += [_host_entry(h) for h in allowed_hosts if h.strip()]
    allowed: list[str] = []
    for entry in dict.fromkeys(hosts):
        has_port = entry.rsplit("]", 1)[-1].count(":") == 1
        allowed += [entry] if has_port else [entry, f"{entry}:*"]
    origins = [f"{scheme}://{entry}" for entry in allowed for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed, allowed_origins=origins
    )


class BearerAuthMiddleware:
    """Pure ASGI: every HTTP request but ``GET /healthz`` must authenticate, or gets a 401 saying how."""

    def __init__(self, app: ASGIApp, *, token: str | None, per_user: bool) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.per_user = per_user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = self.check(headers)
        if problem is None:
            if self.per_user:
                scope["user"] = _caller(headers)
            await self.app(scope, receive, send)
            return
        error, message = problem
        client = scope.get("client")
        log.info("http.unauthorized", method=scope["method"], path=scope["path"], client=client[0] if client else None)
        challenge = 'Bearer realm="fal-mcp"' + (', error="invalid_token"' if error == "invalid_token" else "")
        response = JSONResponse(
            {"error": "unauthorized", "message": message}, status_code=401, headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)

    def check(self, headers: Headers) -> tuple[str, str] | None:
        """``None`` when the request may pass, else (RFC 6750 error, what the caller must send)."""
        scheme, credentials = _authorization(headers)
        if self.token is not None:
            if scheme != "bearer" or not credentials:
                return "invalid_request", "send the server's token as 'Authorization: Bearer <token>'"
            if not hmac.compare_digest(credentials.encode(), self.token):
                return "invalid_token", "the bearer token is not this server's token"
        if not self.per_user:
            return None
        if self.token is not None and not headers.get(FAL_KEY_HEADER, "").strip():
            # The bearer is the server token here, never a fal key: the key must come separately.
            return "invalid_request", "this server runs in per-user mode: send your fal key as 'X-Fal-Key: <key>'"
        key = fal_key_from_headers(headers)
        if key is None:
            return (
                "invalid_request",
                "this server runs in per-user mode: send your own fal key as "
                "'Authorization: Bearer <FAL_KEY>' (or 'X-Fal-Key: <FAL_KEY>')",
            )
        if not plausible_fal_key(key):
            # Refused before it is kept anywhere: made-up strings cost the server nothing.
            return "invalid_token", "that is not a fal key: fal keys look like '<key id>:<key secret>'"
        remember_caller_secret(key)  # before anything downstream can log it (bounded: see fal_mcp.redact)
        return None


def _caller(headers: Headers) -> AuthenticatedUser:
    """The per-user caller as the SDK's session manager sees it: a session only answers the key that opened it."""
    key = fal_key_from_headers(headers)
    assert key is not None  # checked by BearerAuthMiddleware.check
    owner = caller_owner(key)
    return AuthenticatedUser(AccessToken(token=owner, client_id=owner, scopes=[]))


def _authorization(headers: Headers) -> tuple[str, str]:
    """``Authorization: <scheme> <credentials>`` as (lower-case scheme, credentials); empty when absent."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    return scheme.lower(), credentials.strip()


async def _healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def build_http_app(
    settings: Settings,
    *,
    per_user: bool = False,
    token: str | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    local_fal: EmbeddedEmulator | None = None,
) -> Starlette:
    """The streamable HTTP app at ``/mcp`` (SSE responses, so progress streams) plus ``/healthz``.

    Raises :class:`ConfigError` for an unauthenticated non-loopback bind (see :func:`check_exposure`).
    """
    from fal_mcp.server.app import build_server

    token = token or None
    check_exposure(host, token=token, per_user=per_user)
    if token is not None:
        register_secret(token)
    server = build_server(settings, env=env, per_user=per_user, local_fal=local_fal)
    server.custom_route(HEALTH_PATH, methods=["GET"])(_healthz)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        transport_security=transport_security(host, allowed_hosts or []),
        host=host,
        max_sessions=MAX_SESSIONS,
    )
    app.add_middleware(BearerAuthMiddleware, token=token, per_user=per_user)
    return app


class _Server(uvicorn.Server):
    """uvicorn that announces its URL once it accepts connections, and exits 0 when stopped by a signal."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            log.info("http.listening", url=self.url)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # A signal is the normal way to stop a server: don't re-raise it after the graceful shutdown.
        self._captured_signals.clear()


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so ``--port 0`` knows its real port up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


def _refuse(message: str) -> int:
    """Say why we won't start, plainly on stderr (like the CLI's other start-up errors); exit code 2."""
    sys.stderr.write(f"fal-mcp: {message}\n")
    sys.stderr.flush()
    return 2


def run_http(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    per_user: bool = False,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    local_fal: EmbeddedEmulator | None = None,
) -> int:
    """Serve until interrupted; the exit code: 0 after a clean shutdown, 2 for a refused configuration."""
    try:
        app = build_http_app(
            settings, per_user=per_user, token=token, host=host, allowed_hosts=allowed_hosts, local_fal=local_fal
        )
        sock = _bind(host, port)
    except ConfigError as exc:
        return _refuse(str(exc))
    except OSError as exc:
        return _refuse(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    url = f"http://{_host_entry(host)}:{sock.getsockname()[1]}{MCP_PATH}"
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="on",
        log_config=None,  # uvicorn's records go through our structlog handler (JSON on stderr)
        access_log=False,  # request lines would carry query strings; auth failures are logged by the middleware
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,  # open SSE streams must not hold shutdown forever
    )
    log.info("http.starting", url=url, per_user=per_user, token=token is not None)
    try:
        _Server(config, url).run(sockets=[sock])
    finally:
        sock.close()
    log.info("http.stopped", url=url)
    return 0
