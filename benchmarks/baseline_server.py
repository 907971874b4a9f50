"""The SDK's own floor for cold start: a one-tool ``MCPServer`` over stdio, nothing else imported."""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("baseline")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    mcp.run()
