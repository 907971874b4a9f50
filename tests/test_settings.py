"""The environment is read in one place: the server's settings (fal_mcp/config.py). The few other readers
are listed here with why; a new one fails this test until it goes through Settings or is justified."""

from __future__ import annotations

import re
from pathlib import Path

from fal_mcp.config import Settings

ROOT = Path(__file__).resolve().parents[1]

OTHER_READERS = {
    "fal_mcp/log.py": "logging is configured before the settings are read, so a bad setting can be reported",
    "fal_mcp/emulator/config.py": "the standalone emulator (no MCP server, FAL_EMULATOR_*) has its own config",
    "fal_mcp/fal/auth.py": "the fal client as a library: default when no env mapping is passed",
    "fal_mcp/fal/client.py": "the fal client as a library: default when no env mapping is passed",
    "fal_mcp/fal/hosts.py": "the fal client as a library: default when no env mapping is passed",
    "fal_mcp/ledger.py": "the Ledger as a library: default path; the server passes Settings.ledger_path",
    "fal_mcp/doctor.py": "reports on the environment itself",
    "fal_mcp/demo.py": "builds its child server's environment",
}


def test_only_settings_and_the_listed_modules_read_the_environment() -> None:
    readers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "fal_mcp").rglob("*.py")
        if re.search(r"os\.environ|getenv\(", path.read_text(encoding="utf-8"))
    }
    assert readers - {"fal_mcp/config.py"} == set(OTHER_READERS), "read new settings in fal_mcp/config.py"


def test_the_http_token_is_a_setting_and_never_in_its_repr() -> None:
    token = "a-token-long-enough-0123456789"
    settings = Settings.from_env({"FAL_MCP_HTTP_TOKEN": token})
    assert settings.http_token == token
    assert token not in repr(settings) and token not in str(settings)
    assert Settings.from_env({"FAL_MCP_HTTP_TOKEN": "   "}).http_token == "   "  # refused at start-up, not dropped
    assert Settings.from_env({}).http_token is None
