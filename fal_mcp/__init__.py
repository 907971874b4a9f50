"""fal-mcp: fal.ai models as MCP tools, with live progress, bounded waits and no lost or double-paid jobs."""

__version__ = "0.1.0"
