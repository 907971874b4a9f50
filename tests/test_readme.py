"""The README stays true: its tool table is generated from list_tools, and every setting and flag is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fal_mcp.server.docs import BEGIN, END, render_tool_table
from fal_mcp.server.snapshot import live_tools

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_tool_table_matches_list_tools() -> None:
    block = README[README.index(BEGIN) + len(BEGIN) : README.index(END)].strip()
    assert block == render_tool_table(await live_tools()), (
        "README tool table drifted: run python -m fal_mcp.server.docs"
    )


def test_every_environment_variable_is_documented() -> None:
    used = set()
    for path in (ROOT / "fal_mcp").rglob("*.py"):
        used |= set(
            re.findall(
                r"\b(FAL_MCP_[A-Z][A-Z_]*[A-Z]|FAL_EMULATOR_[A-Z_]*[A-Z]|FAL_KEY(?:_ID|_SECRET)?)\b", path.read_text()
            )
        )
    roles = {f"FAL_MCP_{role}_URL" for role in ("QUEUE", "RUN", "REST", "CDN", "PLATFORM", "OPENAPI")}
    missing = sorted(name for name in used | roles if f"`{name}`" not in README)
    assert not missing, f"document these in the README's configuration table: {missing}"


def test_every_cli_flag_is_documented() -> None:
    from fal_mcp import cli

    source = (ROOT / "fal_mcp").rglob("*.py")
    flags = set()
    for path in source:
        flags |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z-]*)\"", path.read_text()))
    assert cli  # the flags above include the CLI's own
    missing = sorted(flag for flag in flags if f"`{flag}" not in README)
    assert not missing, f"document these flags in the README: {missing}"
