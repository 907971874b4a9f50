"""The README's key-less way to point Claude Code at a checkout, run for real with the pinned Claude Code CLI.

The command is taken from the README, run in this checkout's root under a throw-away HOME (the user's own
Claude Code config is never touched), and ``claude mcp list`` must then start the server and connect to it
offline (``--local``: the embedded emulator, no key, no network).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_metadata import run_claude, run_cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_offline_checkout_command_connects_in_claude_mcp_list(tmp_path: Path) -> None:
    [command] = re.findall(r"`(claude mcp add fal-offline [^`]+)`", README)
    assert command.endswith('-- "$PWD/.venv/bin/fal-mcp" --local')
    run_cli(["sh", "-c", command], tmp_path, cwd=ROOT)
    registered = json.loads((tmp_path / ".claude.json").read_text(encoding="utf-8"))["mcpServers"]["fal-offline"]
    script = str(ROOT / ".venv" / "bin" / "fal-mcp")
    assert (registered["command"], registered["args"]) == (script, ["--local"])
    assert not registered.get("env"), "the offline launch needs no key"
    # A server that cannot start, registered beside it: proves `claude mcp list` really checks each one.
    run_claude(["mcp", "add", "broken", "--scope", "user", "--", str(tmp_path / "missing-fal-mcp")], tmp_path, cwd=ROOT)

    listed = run_claude(["mcp", "list"], tmp_path, cwd=tmp_path)
    assert f"fal-offline: {script} --local - ✔ Connected" in listed, listed
    assert f"broken: {tmp_path / 'missing-fal-mcp'}  - ✘ Failed to connect" in listed, listed
