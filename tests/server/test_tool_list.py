"""The tool list: fixed names, honest annotations, typed schemas, and cheap for the model to read."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from fal_mcp.server.app import FalMCPServer

pytestmark = pytest.mark.anyio

EXPECTED = {
    "model_search": {"query", "category", "limit", "cursor"},
    "model_schema": {"endpoint_id", "full"},
    "fal_subscribe": {
        "endpoint_id",
        "input",
        "wait_seconds",
        "priority",
        "hint",
        "start_timeout",
        "fresh",
        "download_dir",
        "file_name_template",
        "expiration_seconds",
        "store_payload",
        "confirm_token",
    },
    "fal_run": {"endpoint_id", "input", "confirm_token"},
    "fal_stream": {"endpoint_id", "input", "confirm_token"},
    "fal_realtime": {"endpoint_id", "inputs", "confirm_token"},
    "queue_submit": {
        "endpoint_id",
        "input",
        "webhook_url",
        "priority",
        "hint",
        "start_timeout",
        "expiration_seconds",
        "store_payload",
        "confirm_token",
    },
    "queue_status": {"request_id", "endpoint_id", "logs"},
    "queue_result": {"request_id", "endpoint_id", "wait_seconds", "download_dir", "file_name_template"},
    "queue_cancel": {"request_id", "endpoint_id"},
    "upload_file": {"path", "url", "data", "content_type", "file_name"},
    "jobs_list": {"status", "endpoint_id", "limit"},
}
READ_ONLY = {"model_search", "model_schema", "queue_status", "jobs_list"}
PLUGIN_PREFIX = "mcp__plugin_fal_fal__"


async def test_tool_names_arguments_and_schemas(server: FalMCPServer, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == set(EXPECTED)
    for name, tool in tools.items():
        assert len(PLUGIN_PREFIX + name) <= 64
        schema = tool.input_schema
        assert schema["type"] == "object"
        assert not {"anyOf", "oneOf", "allOf", "$ref"} & set(schema), name
        assert set(schema["properties"]) == EXPECTED[name], name
        assert tool.title and tool.description
        assert tool.output_schema and tool.output_schema.get("type") == "object", name
        annotations = tool.annotations
        assert annotations is not None
        assert annotations.read_only_hint is (name in READ_ONLY), name
        assert annotations.destructive_hint is (name == "queue_cancel"), name
        assert annotations.open_world_hint is (name != "jobs_list"), name
        assert "title" not in json.dumps(schema["properties"]), "pydantic titles should be compacted away"


async def test_a_tool_that_writes_files_is_not_annotated_read_only(server: FalMCPServer, workdir) -> None:
    """Hosts skip approval for read-only tools; download_dir writes files, so no tool taking it may claim that.

    Checked by behaviour (queue_result really writes into download_dir) and as a rule over the whole list.
    """
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        submitted = await client.call_tool("queue_submit", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
        request_id = submitted.structured_content["request_id"]
        result = await client.call_tool("queue_result", {"request_id": request_id, "download_dir": "saved"})
    assert not result.is_error
    assert any((workdir / "saved").iterdir()), "queue_result wrote files"
    writers = {name for name, tool in tools.items() if "download_dir" in tool.input_schema["properties"]}
    assert writers == {"fal_subscribe", "queue_result"}
    for name in writers:
        hints = tools[name].annotations
        assert hints is not None and hints.read_only_hint is False, name
        # saving never overwrites (a second call saves another copy): not destructive, not idempotent
        assert hints.destructive_hint is False and hints.idempotent_hint is False, name


async def test_what_the_model_reads_fits_in_8_kb(server: FalMCPServer) -> None:
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    payload = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools]
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    assert size <= 8 * 1024, f"tool list costs {size} bytes"


async def test_the_whole_tool_list_fits_in_20_kb(server: FalMCPServer, mode: str) -> None:
    """Output schemas and annotations too: hosts load the whole list; no pydantic titles, no docstring indents."""
    async with Client(server, mode=mode) as client:
        tools = (await client.list_tools()).tools
    whole = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    size = len(json.dumps({"tools": whole}, separators=(",", ":")).encode())
    assert size <= 20 * 1024, f"tools/list is {size} bytes"
    for tool in tools:
        assert "\n" not in (tool.description or ""), tool.name
        assert '"title"' not in json.dumps(tool.output_schema), tool.name


def test_compact_output_schemas_admit_exactly_what_pydantic_does() -> None:
    """Compaction keeps nullability and required fields: clients validate structuredContent against it."""
    import jsonschema

    from fal_mcp.server.app import compact_output_schema
    from fal_mcp.server.outputs import JobOutput, OutputFile

    schema = compact_output_schema(JobOutput.model_json_schema())
    sparse = JobOutput(status="IN_QUEUE", endpoint_id="a/b").model_dump(mode="json")
    full = JobOutput(
        status="COMPLETED", endpoint_id="a/b", request_id="r", output={"x": [1]}, files=[OutputFile(url="https://x")]
    ).model_dump(mode="json")
    for valid in (sparse, full):
        jsonschema.validate(valid, schema)
    for invalid in ({**sparse, "status": "DONE"}, {**sparse, "request_id": 5}, {"status": "IN_QUEUE"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(invalid, schema)


async def test_required_arguments(server: FalMCPServer) -> None:
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools["fal_subscribe"].input_schema["required"]) == {"endpoint_id", "input"}
    assert set(tools["queue_result"].input_schema["required"]) == {"request_id"}
    assert "required" not in tools["upload_file"].input_schema or not tools["upload_file"].input_schema["required"]


async def test_snapshot_is_current_and_equals_registration() -> None:
    """The committed snapshot is what registration produces (regenerate: python -m fal_mcp.server.snapshot)."""
    from fal_mcp.server import snapshot

    cached = snapshot.load()
    assert cached is not None, "fal_mcp/server/tool_list.json is stale: run python -m fal_mcp.server.snapshot"
    live = await snapshot.live_tools()
    assert [t.model_dump(mode="json") for t in cached] == [t.model_dump(mode="json") for t in live]


async def test_first_list_comes_from_the_snapshot_without_registering(server: FalMCPServer) -> None:
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
        assert len(tools) == 12 and not server._registered
        result = await client.call_tool("jobs_list", {})
        assert not result.is_error and server._registered


async def test_server_icon_and_claude_code_result_limit(server: FalMCPServer, mode: str) -> None:
    """Hosts show the icon (an inline data URI: no fetch); Claude Code lets a full model_schema through."""
    import base64

    async with Client(server, mode=mode) as client:
        icons = client.server_info.icons
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert icons and icons[0].mime_type == "image/svg+xml"
    header, _, data = icons[0].src.partition(",")
    assert header == "data:image/svg+xml;base64" and base64.b64decode(data).startswith(b"<svg")
    assert tools["model_schema"].meta == {"anthropic/maxResultSizeChars": 100_000}
