"""A call to a tool the server does not have gets our error shape: kind not_found and the real tool names."""

from __future__ import annotations

import pytest
from mcp import Client

from fal_mcp.server.app import FalMCPServer
from fal_mcp.server.errors import ERROR_META_KEY
from tests.server.test_tool_list import EXPECTED

pytestmark = pytest.mark.anyio


async def test_unknown_tool_is_not_found_and_lists_the_real_tools(server: FalMCPServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        result = await client.call_tool("fal_generate_image", {"prompt": "x"})
        assert result.is_error and result.structured_content is None  # the TS SDK client validates it
        (block,) = result.content  # one self-contained text block: all some hosts show of an error
        assert block.type == "text"
        text = block.text
        assert "[not_found]" in text and "'fal_generate_image'" in text and "Next step:" in text
        assert "Unknown tool" not in text
        assert all(name in text for name in EXPECTED), text
        assert result.meta is not None and result.meta[ERROR_META_KEY]["kind"] == "not_found"

        # A host's prefixed name or a near miss points at the tool meant.
        prefixed = await client.call_tool("mcp__plugin_fal_fal__queue_status", {})
        assert "Did you mean queue_status?" in prefixed.content[0].text
        huge = await client.call_tool("x" * 5000, {})
        assert huge.is_error and len(huge.content[0].text) < 1000

        # The session goes on: a real tool still works.
        assert not (await client.call_tool("jobs_list", {})).is_error


async def test_unknown_tool_as_the_first_call_still_lists_from_the_snapshot(server: FalMCPServer) -> None:
    """The error needs the tools' names, not their schemas: start-up and the first list stay as they were."""
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
        assert not server._registered  # served from the snapshot
        result = await client.call_tool("nope", {})
    assert result.is_error and all(tool.name in result.content[0].text for tool in tools)
