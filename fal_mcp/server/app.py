"""The MCP server, built in a factory: no import-time globals; the lifespan owns the fal client and ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Icon, Tool

from fal_mcp import __version__
from fal_mcp.config import Settings
from fal_mcp.fal.auth import FalCredentials, optional_credentials
from fal_mcp.server.state import ServerState

if TYPE_CHECKING:
    from fal_mcp.emulator.embedded import EmbeddedEmulator

SERVER_NAME = "fal"

# The server's icon for host UIs: a small SVG inlined as a data URI (no network fetch, works offline).
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="14" fill="#111"/>'
    '<text x="32" y="42" font-family="Helvetica,Arial,sans-serif" font-size="26" font-weight="700" fill="#fff" '
    'text-anchor="middle">fal</text></svg>'
)


def server_icons() -> list[Icon]:
    import base64

    data = base64.b64encode(ICON_SVG.encode()).decode()
    return [Icon(src=f"data:image/svg+xml;base64,{data}", mime_type="image/svg+xml", sizes=["any"])]


INSTRUCTIONS = """\
fal.ai models (image, video, audio, LLM) as tools. Find a model with model_search, read its inputs with \
model_schema, then fal_subscribe (submit and wait, with progress). A job that outlives the wait keeps running: \
call queue_result with its request_id. Local file paths in file fields are uploaded for you. jobs_list shows \
every job you submitted, so nothing is lost. Calls cost money: don't repeat a finished job; identical \
fal_subscribe calls re-attach to the earlier job unless fresh=true."""


def compact_schema(schema: Any) -> Any:
    """The input schema the model reads, without pydantic's noise: no titles, ``X | None`` as plain ``X``."""
    if isinstance(schema, list):
        return [compact_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact_schema(prop) for name, prop in value.items()}
        else:
            out[key] = compact_schema(value)
    variants = out.get("anyOf")
    if isinstance(variants, list):
        non_null = [v for v in variants if v != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(variants):
            del out["anyOf"]
            out = {**non_null[0], **out}
            if out.get("default", 0) is None:
                del out["default"]
    if out.get("default", 0) is None:
        del out["default"]
    return out


def compact_output_schema(schema: Any) -> Any:
    """The output schema without pydantic's noise, still admitting exactly the same values.

    Clients validate ``structuredContent`` against it (the TypeScript SDK does), so nullability stays:
    ``anyOf: [{type: X}, {type: null}]`` becomes ``type: [X, "null"]``; titles and defaults (annotations
    that never change validation) go.
    """
    if isinstance(schema, list):
        return [compact_output_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "default"):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: compact_output_schema(prop) for name, prop in value.items()}
        else:
            out[key] = compact_output_schema(value)
    variants = out.get("anyOf")
    if isinstance(variants, list) and variants and all(isinstance(v, dict) and set(v) == {"type"} for v in variants):
        types = [v["type"] for v in variants]
        if all(isinstance(t, str) for t in types):
            del out["anyOf"]
            out["type"] = types[0] if len(types) == 1 else types
    return out


def one_paragraph(text: str | None) -> str | None:
    """A docstring as the model should read it: no source indentation or hard line breaks."""
    return " ".join(text.split()) if text else text


class FalMCPServer(MCPServer):
    """``MCPServer`` with compact input schemas (the model reads the whole tool list) and lazy registration.

    The first ``tools/list`` is answered from a build-time snapshot when it is current; the tools
    themselves are registered on first use, which keeps start-up as fast as a bare server.
    """

    def __init__(
        self,
        *args: Any,
        register: Callable[[MCPServer], None],
        tool_meta: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._register = register
        self._tool_meta = dict(tool_meta or {})  # per-server additions to tools' _meta (settings-dependent)
        self._registered = False
        self._listed: list[Tool] | None = None

    def ensure_tools(self) -> None:
        if not self._registered:
            self._registered = True
            self._register(self)

    async def registered_tools(self) -> list[Tool]:
        """The tool list as registration really produces it (compacted), bypassing the snapshot."""
        self.ensure_tools()
        tools = await super().list_tools()
        return [
            t.model_copy(
                update={
                    "description": one_paragraph(t.description),
                    "input_schema": compact_schema(t.input_schema),
                    "output_schema": compact_output_schema(t.output_schema),
                }
            )
            for t in tools
        ]

    async def list_tools(self) -> list[Tool]:
        if self._listed is None:
            from fal_mcp.server import snapshot

            listed = (None if self._registered else snapshot.load()) or await self.registered_tools()
            self._listed = [
                t.model_copy(update={"meta": {**(t.meta or {}), **self._tool_meta[t.name]}})
                if t.name in self._tool_meta
                else t
                for t in listed
            ]
        return self._listed

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        self.ensure_tools()
        if self._tool_manager.get_tool(name) is None:  # our error shape, not the SDK's bare "Unknown tool"
            from fal_mcp.server.errors import unknown_tool_result

            return unknown_tool_result(name, [tool.name for tool in self._tool_manager.list_tools()])
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            from pydantic import ValidationError

            if not isinstance(exc.__cause__, ValidationError):
                raise
            from fal_mcp.server.errors import argument_error_result

            return argument_error_result(name, exc.__cause__, self._tool_input_schema(name))

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        self.ensure_tools()
        return super()._tool_input_schema(name)


def _register_tools(server: MCPServer) -> None:
    from fal_mcp.server.tools import register_tools  # imported on first use: start-up stays light

    register_tools(server)


def build_server(
    settings: Settings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    credentials: FalCredentials | None = None,
    per_user: bool = False,
    fal_client: Any = None,
    local_fal: EmbeddedEmulator | None = None,
) -> FalMCPServer:
    """Create the server. Credentials come from ``env`` (default: the process environment) unless given.

    ``local_fal`` is the emulator ``--local`` serves against (the CLI starts and stops it)."""
    settings = settings or Settings.from_env(env)
    if settings.local and local_fal is None and fal_client is None:
        raise ValueError("--local serves against an embedded emulator: pass local_fal (the CLI starts one)")
    reason: str | None = None
    if credentials is None and not per_user:
        credentials, reason = optional_credentials(env)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[ServerState]:
        state = ServerState(
            settings,
            credentials=credentials,
            not_configured_reason=reason,
            fal_client=fal_client,
            per_user=per_user,
            local_fal=local_fal,
        )
        try:
            async with anyio.create_task_group() as background:
                state.background = background
                yield state
                background.cancel_scope.cancel()
        finally:
            state.background = None
            await state.aclose()

    from fal_mcp.spend import PAYING_TOOLS, REQUIRES_USER_INTERACTION

    tool_meta: dict[str, dict[str, Any]] = {}
    if settings.require_approval:
        for name in PAYING_TOOLS:
            tool_meta.setdefault(name, {})[REQUIRES_USER_INTERACTION] = True
    extensions = []
    if settings.apps:
        from fal_mcp.server.apps import BOUND_TOOLS, gallery_extension, ui_meta

        extensions.append(gallery_extension(settings))
        for name in BOUND_TOOLS:
            tool_meta.setdefault(name, {}).update(ui_meta())
    server = FalMCPServer(
        SERVER_NAME,
        register=_register_tools,
        tool_meta=tool_meta or None,
        extensions=extensions,
        title="fal.ai",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://fal.ai",
        icons=server_icons(),
        lifespan=lifespan,
    )
    return server
