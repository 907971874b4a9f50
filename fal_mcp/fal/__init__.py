"""The fal platform client. Knows nothing of MCP."""
