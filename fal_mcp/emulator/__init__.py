"""A local fal: every fal role on one origin, faithful enough for fal's own clients. Knows nothing of MCP."""
