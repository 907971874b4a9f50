"""The environment is read in one place: the server's settings (fal_mcp/config.py). The few other readers
are listed here with why; a new one fails this test until it goes through Settings or is justified."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fal_mcp.config import ConfigError, Settings, settings_variables

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


def test_every_fal_mcp_variable_read_anywhere_is_a_setting() -> None:
    used = set()
    for path in (ROOT / "fal_mcp").rglob("*.py"):
        used |= set(re.findall(r"\b(FAL_MCP_[A-Z][A-Z_]*[A-Z])\b", path.read_text(encoding="utf-8")))
    roles = {f"FAL_MCP_{role}_URL" for role in ("QUEUE", "RUN", "REST", "CDN", "PLATFORM", "OPENAPI")}
    assert (used | roles) - settings_variables() == set(), "add these to Settings (fal_mcp/config.py)"


# A value for each variable that is not its default: a documented variable Settings.from_env ignores fails.
SAMPLES = {
    "FAL_MCP_WAIT_SECONDS": "30",
    "FAL_MCP_HEARTBEAT_SECONDS": "2",
    "FAL_MCP_ON_CLIENT_CANCEL": "keep",
    "FAL_MCP_REUSE_WINDOW_SECONDS": "60",
    "FAL_MCP_MAX_COST_USD": "0.5",
    "FAL_MCP_CONFIRM_ABOVE_USD": "0.1",
    "FAL_MCP_BUDGET_USD_PER_DAY": "5",
    "FAL_MCP_BUDGET_USD_PER_SESSION": "1",
    "FAL_MCP_REQUIRE_APPROVAL": "1",
    "FAL_MCP_VALIDATE_INPUT": "0",
    "FAL_MCP_RECONCILE_WINDOW_SECONDS": "600",
    "FAL_MCP_OUTPUT_EXPIRATION_SECONDS": "3600",
    "FAL_MCP_STORE_PAYLOAD": "0",
    "FAL_MCP_THUMBNAILS": "0",
    "FAL_MCP_THUMBNAIL_MAX_PX": "256",
    "FAL_MCP_THUMBNAIL_MAX_BYTES": "50000",
    "FAL_MCP_ALLOWED_DIRS": "/srv/pictures",
    "FAL_MCP_ALLOW_DOTFILES": "1",
    "FAL_MCP_MAX_UPLOAD_BYTES": "1000",
    "FAL_MCP_MAX_DOWNLOAD_BYTES": "1000",
    "FAL_MCP_ALLOW_PRIVATE_URLS": "1",
    "FAL_MCP_FILE_NAME_TEMPLATE": "{request_id}-{index}.{ext}",
    "FAL_MCP_PROVENANCE": "0",
    "FAL_MCP_GALLERY": "0",
    "FAL_MCP_APPS": "0",
    "FAL_MCP_LEDGER": "/srv/ledger.sqlite3",
    "FAL_MCP_LEDGER_KEEP_DAYS": "7",
    "FAL_MCP_LEDGER_KEEP_JOBS": "100",
    "FAL_MCP_CACHE_DIR": "/srv/cache",
    "FAL_MCP_NO_DISK_CACHE": "1",
    "FAL_MCP_CA_FILE": "/srv/ca.pem",
    "FAL_MCP_LOCAL": "1",
    "FAL_MCP_EMULATOR_TIME_SCALE": "0.5",
    "FAL_MCP_BASE_URL": "http://127.0.0.1:8790",
    "FAL_MCP_HTTP_TOKEN": "a-token-long-enough-0123456789",
    "FAL_MCP_LOG_LEVEL": "debug",
    "FAL_MCP_LOG_FORMAT": "console",
} | {f"FAL_MCP_{role}_URL": "http://127.0.0.1:1" for role in ("QUEUE", "RUN", "REST", "CDN", "PLATFORM", "OPENAPI")}


def test_each_documented_variable_changes_the_settings() -> None:
    assert set(SAMPLES) == settings_variables()
    default = Settings.from_env({})
    ignored = [name for name, value in SAMPLES.items() if Settings.from_env({name: value}) == default]
    assert not ignored, f"Settings.from_env does not read {ignored}"


@pytest.mark.parametrize(("name", "value"), [("FAL_MCP_LOG_LEVEL", "loud"), ("FAL_MCP_LOG_FORMAT", "xml")])
def test_a_bad_log_setting_is_a_clear_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_unset_variables_give_the_fields_defaults() -> None:
    """from_env's fallbacks and the fields' (documented) defaults are the same values."""
    assert Settings.from_env({}) == Settings()


def test_the_readme_shows_each_fields_real_default() -> None:
    def shown(value: object) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    checked = 0
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        literal = re.fullmatch(r"`([^`]*)`", str(extra.get("shown"))) if isinstance(extra, dict) else None
        if literal:
            assert literal.group(1) == shown(field.default), name
            checked += 1
    assert checked >= 20
