"""The README stays true: its tool table is generated from list_tools, and every setting and flag is documented."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


def test_configuration_table_is_generated_from_settings() -> None:
    from fal_mcp import config

    block = README[README.index(config.BEGIN) + len(config.BEGIN) : README.index(config.END)].strip()
    assert block == config.render_env_table(), "README configuration table drifted: python -m fal_mcp.config --readme"


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


# --- install links (Cursor, VS Code) and local-checkout commands -------------------------------------------


def install_links() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_links", ROOT / "packaging" / "install_links.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(link: str) -> tuple[str, dict[str, Any]]:
    """A link's target (scheme, host and path) and its query, JSON and base64 undone as each client does."""
    url = urlsplit(link)
    query = {key: values[0] for key, values in parse_qs(url.query, strict_parsing=True).items()}
    if "cursor" in url.netloc or url.scheme == "cursor":
        query["config"] = json.loads(base64.b64decode(query["config"], validate=True))
    else:
        query["config"], query["inputs"] = json.loads(query["config"]), json.loads(query["inputs"])
    return f"{url.scheme}://{url.netloc}{url.path}", query


def client_file(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "docs" / "clients" / name).read_text(encoding="utf-8"))


def test_readme_install_links_are_the_generated_ones() -> None:
    links = install_links()
    block = README[README.index(links.BEGIN) + len(links.BEGIN) : README.index(links.END)].strip()
    assert block == links.render_readme_block(), (
        "README install links drifted: python packaging/install_links.py --readme"
    )


def test_each_install_link_decodes_to_the_tested_client_config() -> None:
    links = install_links().published_links()
    cursor, vscode = client_file("cursor.mcp.json"), client_file("vscode.mcp.json")
    assert decode(links["Cursor"]) == (
        "https://cursor.com/en/install-mcp",
        {"name": "fal", "config": cursor["mcpServers"]["fal"]},
    )
    expected = {"name": "fal", "config": vscode["servers"]["fal"], "inputs": vscode["inputs"]}
    assert decode(links["VS Code"]) == ("https://insiders.vscode.dev/redirect/mcp/install", expected)
    assert decode(links["VS Code Insiders"]) == (
        "https://insiders.vscode.dev/redirect/mcp/install",
        {**expected, "quality": "insiders"},
    )
    for link in links.values():
        assert f"({link})" in README


def test_checkout_links_start_this_checkouts_server() -> None:
    links = install_links().checkout_links(ROOT)
    script = ROOT / ".venv" / "bin" / "fal-mcp"
    cursor, vscode = client_file("cursor.mcp.json"), client_file("vscode.mcp.json")
    local = {"command": str(script), "args": []}
    assert decode(links["Cursor"])[1]["config"] == {**cursor["mcpServers"]["fal"], **local}
    target, query = decode(links["Cursor (app link)"])
    assert target == "cursor://anysphere.cursor-deeplink/mcp/install" and query["config"]["command"] == str(script)
    _, query = decode(links["VS Code"])
    assert query["config"] == {**vscode["servers"]["fal"], **local} and query["inputs"] == vscode["inputs"]
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("fal-mcp ")


def test_readme_claude_code_checkout_command_registers_a_server_that_connects(tmp_path: Path) -> None:
    from tests.test_metadata import run_claude, run_cli

    [line] = [line for line in README.splitlines() if "From a checkout** (run in its root)" in line]
    command = line.split("`")[1]
    assert command.startswith("claude mcp add fal ") and command.endswith('-- "$PWD/.venv/bin/fal-mcp"')
    run_cli(["sh", "-c", command], tmp_path, cwd=ROOT, env={"FAL_KEY": "checkout-test-key"})
    registered = json.loads((tmp_path / ".claude.json").read_text(encoding="utf-8"))["mcpServers"]["fal"]
    assert registered["command"] == str(ROOT / ".venv" / "bin" / "fal-mcp") and registered["args"] == []
    assert registered["env"] == {"FAL_KEY": "checkout-test-key"}
    output = run_claude(["mcp", "get", "fal"], tmp_path, cwd=tmp_path)
    assert "Status: ✔ Connected" in output, output
