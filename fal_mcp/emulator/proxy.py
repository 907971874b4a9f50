"""The JS client's ``proxyUrl`` mode: every call arrives at one URL with ``x-fal-target-url: <real fal URL>``.

The target's host is mapped to the emulator's role prefix and the request is dispatched in-process
through the same ASGI app (method, headers, query and body pass through; the response, event streams
included, streams back untouched). Answers for a missing or foreign target follow fal's own proxy
(``@fal-ai/server-proxy``): 400 and 412 with ``{"details": …}``. Like a proxy configured with a server
key, a request without ``Authorization`` gets one added.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

TARGET_URL_HEADER = "x-fal-target-url"
PROXY_PATHS = ("/proxy", "/api/fal/proxy")
# What the proxy's "server-side key" is when the caller sent none (any key passes the emulator).
PROXY_AUTHORIZATION = b"Key emulator-proxy"

# Host → emulator prefix, for fal's hosts (``api.fal.ai`` only under ``/v1``, ``fal.ai`` only for OpenAPI).
HOST_PREFIXES = {
    "queue.fal.run": "/queue",
    "fal.run": "/run",
    "rest.fal.ai": "/rest",
    "rest.alpha.fal.ai": "/rest",
    "v3.fal.media": "/cdn",
    "v3b.fal.media": "/cdn",
    "fal.media": "/cdn",
}
OWN_PREFIXES = ("/queue", "/run", "/rest", "/cdn", "/platform", "/openapi")
_DROPPED = {b"host", b"content-length", TARGET_URL_HEADER.encode()}


def target_path(target: str, own_origin: str) -> tuple[str, str] | None:
    """(emulator path, query) for a fal URL or a URL of this emulator; None when the target is not allowed."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        return None
    host = (parts.hostname or "").lower()
    path = parts.path or "/"
    if parts.netloc.lower() == urlsplit(own_origin).netloc.lower():
        return (path, parts.query) if path.startswith(OWN_PREFIXES) else None
    if host in HOST_PREFIXES:
        return HOST_PREFIXES[host] + path, parts.query
    if host == "api.fal.ai" and (path == "/v1" or path.startswith("/v1/")):
        return "/platform" + path[len("/v1") :], parts.query
    if host == "fal.ai" and path.rstrip("/") == "/api/openapi/queue/openapi.json":
        return "/openapi/queue/openapi.json", parts.query
    return None


class ProxyEndpoint:
    """A raw ASGI endpoint: rewrites the scope to the target and calls the whole app with it."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        target = headers.get(TARGET_URL_HEADER)
        if not target:
            response = JSONResponse({"details": f"Missing the {TARGET_URL_HEADER} header"}, status_code=400)
            await response(scope, receive, send)
            return
        own_origin = self.state.public_base(Request(scope))
        mapped = target_path(target, own_origin)
        if mapped is None:
            log.info("proxy refused target", target=urlsplit(target).netloc)
            response = JSONResponse({"details": f"Invalid {TARGET_URL_HEADER} header"}, status_code=412)
            await response(scope, receive, send)
            return
        path, query = mapped
        raw_headers = [(name, value) for name, value in scope["headers"] if name.lower() not in _DROPPED]
        if not any(name.lower() == b"authorization" for name, _ in raw_headers):
            raw_headers.append((b"authorization", PROXY_AUTHORIZATION))
        raw_headers.append((b"host", headers.get("host", "").encode()))
        # A body may still be streaming in; without content-length the inner app reads it to the end.
        if headers.get("content-length") is not None:
            raw_headers.append((b"content-length", headers["content-length"].encode()))
        inner: Scope = {
            **scope,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
        }
        inner.pop("route", None)
        inner.pop("endpoint", None)
        inner["path_params"] = {}
        await scope["app"](inner, receive, send)


def routes(state: EmulatorState) -> list[BaseRoute]:
    """``/proxy`` and ``/api/fal/proxy`` for GET, POST, PUT (and DELETE/HEAD/OPTIONS, passed through)."""
    endpoint = ProxyEndpoint(state)
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return [Route(path, endpoint, methods=methods) for path in PROXY_PATHS]
