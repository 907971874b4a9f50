"""A build-time snapshot of the tool list, so the first ``tools/list`` costs no schema generation.

Registering a tool makes the SDK build pydantic models and JSON schemas for its input and output
(~5 ms a tool). The snapshot holds exactly what registration produces; it is used only while its
fingerprint (the server's sources and the pydantic/MCP versions) matches, and a test fails when the
committed snapshot drifts. Regenerate with ``python -m fal_mcp.server.snapshot``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mcp.types import Tool

SNAPSHOT_PATH = Path(__file__).with_name("tool_list.json")
_SERVER = Path(__file__).parent
# The files that define the tools' names, descriptions, annotations and schemas.
_SOURCES = ("app.py", "outputs.py", "snapshot.py", "tools/*.py")


def fingerprint() -> str:
    """Changes whenever anything that shapes the tool list may have changed."""
    import pydantic
    from mcp.types import LATEST_PROTOCOL_VERSION

    digest = hashlib.sha256(f"{pydantic.VERSION}|{LATEST_PROTOCOL_VERSION}".encode())
    for path in sorted(p for pattern in _SOURCES for p in _SERVER.glob(pattern)):
        digest.update(path.relative_to(_SERVER).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def render(tools: list[Tool]) -> str:
    data: dict[str, Any] = {
        "fingerprint": fingerprint(),
        "tools": [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools],
    }
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def load() -> list[Tool] | None:
    """The snapshot's tools, or ``None`` when it is missing or stale (then tools are registered for real)."""
    try:
        data = json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint():
        return None
    return [Tool.model_validate(tool) for tool in data["tools"]]


async def live_tools() -> list[Tool]:
    from fal_mcp.config import Settings
    from fal_mcp.server.app import build_server

    server = build_server(Settings(), env={})
    return await server.registered_tools()


def main() -> None:
    import anyio

    SNAPSHOT_PATH.write_text(render(anyio.run(live_tools)), encoding="utf-8")


if __name__ == "__main__":
    main()
