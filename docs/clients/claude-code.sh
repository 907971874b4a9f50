#!/bin/sh
# Claude Code: add the fal MCP server for every project (user scope).
# Needs uv (https://docs.astral.sh/uv/) for `uvx`, and your fal.ai key in $FAL_KEY.
# Alternative: install the Claude Code plugin, which bundles this server and its skills:
#   /plugin install fal --marketplace fal-mcp/fal-mcp
claude mcp add fal --scope user --env FAL_KEY="$FAL_KEY" -- uvx fal-mcp==0.1.0
