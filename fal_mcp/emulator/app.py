"""The emulator as one ASGI app: every fal role on one origin under its path prefix.

``/queue`` queue.fal.run · ``/run`` fal.run (+ realtime WS) · ``/rest`` rest.fal.ai · ``/cdn`` v3.fal.media ·
``/platform`` api.fal.ai/v1 · ``/openapi`` fal.ai/api/openapi/queue/openapi.json · proxy route at the root.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fal_mcp.emulator import openapi, platform, proxy, queue, realtime, run, storage
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.faults import FaultMiddleware
from fal_mcp.emulator.state import EmulatorState
from fal_mcp.log import get_logger

log = get_logger(__name__)

# nginx's code for "the client closed the request": nobody reads it, but the ASGI cycle needs an answer.
CLIENT_CLOSED_REQUEST = 499


class RequestIdMiddleware:
    """Every gateway response carries ``x-fal-request-id`` (fal_client tells ingress errors by its absence)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-fal-request-id" for name, _ in headers):
                    headers.append((b"x-fal-request-id", str(uuid.uuid4()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that hangs up mid-body (an aborted upload) is routine, not a server error: no traceback."""
    log.debug("client disconnected before sending its whole body", path=request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


class EmulatorApp(Starlette):
    """Starlette with faults and request ids outermost: a dropped connection must bypass Starlette's 500 handler."""

    def __init__(self, state: EmulatorState, routes: list[BaseRoute]) -> None:
        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            async with state.lifespan():
                yield

        super().__init__(routes=routes, lifespan=lifespan, exception_handlers={ClientDisconnect: _client_gone})
        self.state.emulator = state
        self._outer = FaultMiddleware(RequestIdMiddleware(super().__call__), state.faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._outer(scope, receive, send)


def _at(path: str, routes: list[BaseRoute]) -> list[BaseRoute]:
    """Copies of the ``/`` routes at an exact ``path`` (fal's openapi URL has no trailing slash)."""
    return [
        Route(path, route.endpoint, methods=route.methods, name=None)
        for route in routes
        if isinstance(route, Route) and route.path == "/"
    ]


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    state = EmulatorState(config)
    openapi_routes = openapi.routes(state)
    routes: list[BaseRoute] = [
        Mount("/queue", routes=queue.routes(state)),
        Mount("/run", routes=[*realtime.routes(state), *run.routes(state)]),  # realtime before the catch-all
        Mount("/rest", routes=storage.rest_routes(state)),  # + realtime tokens and the webhook JWKS
        Mount("/cdn", routes=storage.cdn_routes(state)),
        Mount("/platform", routes=platform.routes(state)),
        *_at("/openapi", openapi_routes),
        Mount("/openapi", routes=openapi_routes),
        *proxy.routes(state),
    ]
    return EmulatorApp(state, routes)
