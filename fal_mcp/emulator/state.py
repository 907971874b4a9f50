"""Everything one running emulator knows, shared by all its route modules (``app.state.emulator``)."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.faults import FaultInjector
from fal_mcp.emulator.models import ModelRegistry, default_registry
from fal_mcp.emulator.queue import QueueEngine
from fal_mcp.emulator.realtime import TokenError, verify_token
from fal_mcp.emulator.run import CallContext, caller_id
from fal_mcp.emulator.storage import FileStore
from fal_mcp.emulator.webhooks import WebhookSender
from fal_mcp.fal.hosts import EMULATOR_PREFIXES


class EmulatorState:
    """Config, models, queue, faults, files and webhooks of one emulator instance."""

    def __init__(self, config: EmulatorConfig | None = None, models: ModelRegistry | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.models = models or default_registry()
        self.faults = FaultInjector(self.config.faults)
        # One count per accepted queue submit or direct run, keyed "<endpoint_id> <input digest>":
        # tests use it to prove nothing was submitted twice.
        self.submissions: collections.Counter[str] = collections.Counter()
        self.files = FileStore(self.config)
        self.webhooks = WebhookSender(self.config)
        self.queue = QueueEngine(self)
        self._task_group: TaskGroup | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Own the background tasks (queue runners, timers, webhook deliveries) for the app's lifetime;
        on shutdown also drop the stored files (and their temp directory)."""
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                try:
                    yield
                finally:
                    self._task_group = None
                    task_group.cancel_scope.cancel()
        finally:
            self.files.close()

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``func(*args)`` in the background, outliving the HTTP request that started it."""
        if self._task_group is None:
            raise RuntimeError("emulator is not running (the app's lifespan has not started)")
        self._task_group.start_soon(func, *args)  # type: ignore[arg-type]

    def public_base(self, request: HTTPConnection, role: str = "") -> str:
        """``scheme://host[:port]/<role prefix>`` as the client addressed us (``role=""``: the origin)."""
        headers = request.headers
        scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or request.url.scheme
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        host = headers.get("x-forwarded-host", "").split(",")[0].strip() or headers.get("host") or request.url.netloc
        return f"{scheme}://{host}{EMULATOR_PREFIXES[role] if role else ''}"

    def auth_error(self, request: HTTPConnection, endpoint: str | None = None) -> JSONResponse | None:
        """401 like fal's for a missing or malformed ``Authorization``; None when the caller may proceed.

        With ``endpoint`` (the run host), a ``?fal_jwt_token=`` from ``/tokens/`` that allows that app
        also passes: the JS client's client-side streaming sends one instead of a header.
        """
        if not self.config.require_auth:
            return None
        token = request.query_params.get("fal_jwt_token")
        if endpoint is not None and token:
            try:
                verify_token(token, endpoint)
            except TokenError as exc:
                return JSONResponse({"detail": f"invalid fal_jwt_token: {exc}"}, status_code=401)
            return None
        if caller_id(request) is not None:
            return None
        return JSONResponse({"detail": "invalid key credentials"}, status_code=401)

    def make_context(
        self, request_id: str, base_url: str, on_log: Callable[[dict[str, Any]], None] | None = None
    ) -> CallContext:
        """A :class:`RunContext` for running a model outside the queue (e.g. the realtime route)."""
        return CallContext(self, request_id, base_url, on_log)
