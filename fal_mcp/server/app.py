"""The MCP server, built in a factory: no import-time globals; the lifespan owns the fal client and ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import Tool

from fal_mcp import __version__
from fal_mcp.config import Settings
from fal_mcp.fal.auth import FalCredentials, optional_credentials
from fal_mcp.server.state import ServerState

SERVER_NAME = "fal"

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


class FalMCPServer(MCPServer):
    """``MCPServer`` whose advertised input schemas are compacted (the whole tool list is read by the model)."""

    _compacted: list[Tool] | None = None

    async def list_tools(self) -> list[Tool]:
        if self._compacted is None:
            tools = await super().list_tools()
            self._compacted = [t.model_copy(update={"input_schema": compact_schema(t.input_schema)}) for t in tools]
        return self._compacted


def build_server(
    settings: Settings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    credentials: FalCredentials | None = None,
    per_user: bool = False,
    fal_client: Any = None,
) -> FalMCPServer:
    """Create the server. Credentials come from ``env`` (default: the process environment) unless given."""
    settings = settings or Settings.from_env(env)
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
        )
        try:
            async with anyio.create_task_group() as background:
                state.background = background
                yield state
                background.cancel_scope.cancel()
        finally:
            state.background = None
            await state.aclose()

    server = FalMCPServer(
        SERVER_NAME,
        title="fal.ai",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://fal.ai",
        lifespan=lifespan,
    )
    from fal_mcp.server.tools import register_tools

    register_tools(server)
    return server
