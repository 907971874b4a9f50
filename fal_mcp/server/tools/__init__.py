"""The tools: thin functions over the typed fal client. Names and argument names are a public contract."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from fal_mcp.server.tools import catalog, direct, files, queue


def register_tools(server: MCPServer) -> None:
    for module in (catalog, queue, direct, files):
        module.register(server)
