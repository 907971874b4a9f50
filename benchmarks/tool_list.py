"""Target 2: what the model reads of the tool list (names, descriptions, input schemas) is at most 8 KB,
and the whole ``tools/list`` result (titles, annotations, output schemas, _meta) at most 20 KB.

Counted as ``tests/server/test_tool_list.py`` counts them: compact JSON of ``name``, ``description`` and
``inputSchema`` per tool, and compact JSON of ``{"tools": [...]}`` with every field the host receives.

    python -m benchmarks.tool_list
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp import Client

from benchmarks._common import print_table, say, write_result
from fal_mcp.config import Settings
from fal_mcp.log import configure_logging
from fal_mcp.server.app import build_server

TARGET_BYTES = 8 * 1024
WHOLE_TARGET_BYTES = 20 * 1024


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


async def measure() -> dict[str, Any]:
    server = build_server(Settings(), env={})
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    per_tool = []
    for tool in tools:
        read = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
        per_tool.append(
            {
                "name": tool.name,
                "model_reads_bytes": _size(read),
                "description_bytes": len((tool.description or "").encode()),
                "input_schema_bytes": _size(tool.input_schema),
                "full_bytes": _size(tool.model_dump(mode="json", by_alias=True, exclude_none=True)),
            }
        )
    model_reads = _size([{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools])
    full = _size({"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]})
    return {
        "method": "in-memory Client(build_server()).list_tools(); compact JSON (no spaces) of each part",
        "tools": len(tools),
        "model_reads_bytes": model_reads,
        "full_tools_list_bytes": full,
        "per_tool": per_tool,
        "target": f"<= {TARGET_BYTES} bytes",
        "whole_target": f"<= {WHOLE_TARGET_BYTES} bytes",
        "met": model_reads <= TARGET_BYTES and full <= WHOLE_TARGET_BYTES,
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        [t["name"], t["model_reads_bytes"], t["description_bytes"], t["input_schema_bytes"], t["full_bytes"]]
        for t in result["per_tool"]
    ]
    rows.append(["TOTAL", result["model_reads_bytes"], "", "", result["full_tools_list_bytes"]])
    print_table(
        "Tool list: bytes the model reads (name + description + inputSchema)",
        ["tool", "model reads", "description", "inputSchema", "full entry"],
        rows,
    )
    verdict = "met" if result["met"] else "MISSED"
    say(
        f"  {result['model_reads_bytes']} bytes for {result['tools']} tools (target {result['target']}), "
        f"whole tools/list {result['full_tools_list_bytes']} bytes (target {result['whole_target']}): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    configure_logging("WARNING")
    result = anyio.run(measure)
    report(result)
    say(f"  → {write_result('tool_list', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
