"""MCP clients for the benchmarks: fal-mcp in memory or as a real stdio subprocess, pointed at an emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from benchmarks._common import server_command, server_env
from fal_mcp.config import Settings
from fal_mcp.server.app import build_server

Transport = Literal["memory", "stdio"]


@asynccontextmanager
async def mcp_client(
    transport: Transport, base_url: str, state_dir: Path, *, cwd: Path | None = None, **env: str
) -> AsyncIterator[Client]:
    """A connected client. ``stdio``: ``python -m fal_mcp`` in ``cwd``, its stderr in ``state_dir/server.log``."""
    await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
    environment = server_env(state_dir, base_url, **env)
    async with AsyncExitStack() as stack:
        if transport == "memory":
            server = build_server(Settings.from_env(environment), env=environment)
            client = await stack.enter_async_context(Client(server))
        else:
            errlog = stack.enter_context((state_dir / "server.log").open("w"))
            command = server_command()
            params = StdioServerParameters(command=command[0], args=command[1:], env=environment, cwd=cwd or state_dir)
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
        yield client


def structured(result: CallToolResult) -> dict[str, Any]:
    """The tool's structured output; a readable failure when the call failed."""
    if result.structured_content is None:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"tool call returned no structured content: {text[:500]}")
    return result.structured_content
