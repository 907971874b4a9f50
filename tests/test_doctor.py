"""``fal-mcp doctor`` as a user runs it: a subprocess against a real emulator (or a closed port), a fake HOME."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.ledger import Ledger

KEY_ID = "0123abcd-4567-89ef-0123-456789abcdef"
SECRET = "5ecr37deadbeefcafe0123456789abcd"
KEY = f"{KEY_ID}:{SECRET}"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(EmulatorConfig(time_scale=0.01)).start()
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def base_env(home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment without any fal or fal-mcp setting, a fake HOME and private state paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CLAUDE_"))}
    env.update(
        HOME=str(home),
        FAL_MCP_LEDGER=str(tmp_path / "state" / "ledger.sqlite3"),
        FAL_MCP_CACHE_DIR=str(tmp_path / "cache"),
    )
    env.update(extra)
    return env


def doctor(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fal_mcp", "doctor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def lines(output: str, section: str) -> list[str]:
    """The check lines of one report section."""
    block = output.split(f"\n{section}", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip()]


def write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthy_setup_passes_every_section(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    write_json(
        home / ".claude.json",
        {"mcpServers": {"fal": {"command": "uvx", "args": ["fal-mcp"], "env": {"FAL_KEY": KEY}}}},
    )
    env = base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=emulator.base_url)
    result = doctor(env, workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"Hosts (emulator at {emulator.base_url})" in out
    for section in ("Settings", "Key", "State", "Files", "MCP clients"):
        assert lines(out, section), section
        assert all(line[0] in "✓·" for line in lines(out, section)), lines(out, section)
    hosts = lines(out, "Hosts")
    assert [line.split()[1] for line in hosts] == ["queue", "run", "rest", "cdn", "platform", "openapi", "key"]
    assert all(line.startswith("✓") for line in hosts), hosts
    assert "answered HTTP" in out and "accepted by" in out
    key_line = lines(out, "Key")[0]
    assert f"set ({len(KEY)} chars), id {KEY_ID[:4]}…" in key_line
    assert "ready" in out and "\x1b[" not in out  # not a TTY: no colours
    # The secret appears nowhere: not in the report, not in a log line, not even the key id in full.
    assert SECRET not in out + result.stderr and KEY_ID not in out + result.stderr


def test_missing_key_fails_with_the_fix(emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path) -> None:
    result = doctor(base_env(home, tmp_path, FAL_MCP_BASE_URL=emulator.base_url), workdir)
    assert result.returncode == 1
    key = lines(result.stdout, "Key")
    assert key[0].startswith("✗") and "no FAL_KEY" in key[0]
    assert "https://fal.ai/dashboard/keys" in key[1] and "--local" in key[1]
    assert all(line.startswith("✓") for line in lines(result.stdout, "Hosts"))  # hosts still checked
    assert "1 problem(s)" in result.stdout
    # --local: no key needed, and the embedded emulator is what gets checked.
    local = doctor(base_env(home, tmp_path), workdir, "--local")
    assert local.returncode == 0, local.stdout
    assert "Hosts (embedded emulator, --local)" in local.stdout
    assert lines(local.stdout, "Key")[0].startswith("·")


def test_template_key_is_flagged(emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path) -> None:
    env = base_env(home, tmp_path, FAL_KEY="${FAL_KEY}", FAL_MCP_BASE_URL=emulator.base_url)
    result = doctor(env, workdir)
    assert result.returncode == 1
    key = lines(result.stdout, "Key")[0]
    assert key.startswith("✗") and "unexpanded placeholder" in key


def test_key_shape_warnings_never_show_the_secret(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    opaque = "sk-" + SECRET
    result = doctor(base_env(home, tmp_path, FAL_KEY=opaque, FAL_MCP_BASE_URL=emulator.base_url), workdir)
    key = lines(result.stdout, "Key")[0]
    assert key.startswith("!") and f"set ({len(opaque)} chars) but not in fal's id:secret form" in key
    assert SECRET not in result.stdout + result.stderr and "sk-5" not in result.stdout
    short = "abc:def"
    result = doctor(base_env(home, tmp_path, FAL_KEY=short, FAL_MCP_BASE_URL=emulator.base_url), workdir)
    assert "shorter than fal keys usually are" in lines(result.stdout, "Key")[0]
    split = base_env(home, tmp_path, FAL_KEY_ID=KEY_ID, FAL_KEY_SECRET=SECRET, FAL_MCP_BASE_URL=emulator.base_url)
    result = doctor(split, workdir, "--json")
    assert result.returncode == 0, result.stdout
    assert SECRET not in result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert any(c["name"] == "FAL_KEY_ID/FAL_KEY_SECRET" and c["level"] == "ok" for c in checks)


def test_unreachable_hosts_fail(home: Path, workdir: Path, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    result = doctor(base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=base), workdir, "--timeout", "2")
    assert result.returncode == 1
    hosts = lines(result.stdout, "Hosts")
    failed = [line for line in hosts if line.startswith("✗")]
    assert len(failed) == 6 and all("not reachable: connection refused" in line for line in failed), hosts
    assert "key" not in [line.split()[1] for line in hosts]  # nothing to verify the key against
    assert sum("→ check the network" in line for line in hosts) == 1  # the shared fix is shown once
    assert "Traceback" not in result.stdout + result.stderr


class _RejectingPlatform(http.server.BaseHTTPRequestHandler):
    """A platform host that answers but refuses every key (the emulator accepts any)."""

    def do_GET(self) -> None:
        status = 401 if "pricing" in self.path else 200
        body = json.dumps({"error": {"type": "authorization_error", "message": "bad key"}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_rejected_key_fails(emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RejectingPlatform)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        platform = f"http://127.0.0.1:{server.server_address[1]}/v1"
        env = base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=emulator.base_url, FAL_MCP_PLATFORM_URL=platform)
        result = doctor(env, workdir)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    key = next(line for line in lines(result.stdout, "Hosts") if line.split()[1] == "key")
    assert key.startswith("✗") and "key rejected" in key and "HTTP 401" in key
    assert SECRET not in result.stdout


def test_ledger_counts_jobs_and_unresolved_submissions(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"

    async def seed() -> None:
        async with Ledger.open(path) as ledger:
            intent = await ledger.record_intent(
                "fal-ai/flux/dev", f"local@{emulator.base_url}", {"prompt": "a"}, "fal_subscribe"
            )
            await ledger.attach_request_id(intent, "11111111-1111-4111-8111-111111111111", status="IN_QUEUE")
            await ledger.record_intent(
                "fal-ai/flux/dev", f"local@{emulator.base_url}", {"prompt": "b"}, "fal_subscribe"
            )

    anyio.run(seed)
    env = base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=emulator.base_url)
    result = doctor(env, workdir, "--json")
    assert result.returncode == 0, result.stdout  # a warning is not a failure
    ledger = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "ledger")
    assert ledger["level"] == "warn"
    assert f"{path}: 2 jobs (2 running), writable" in ledger["detail"]
    assert "1 submission(s)" in ledger["detail"] and ledger["fix"]


def test_settings_and_roots_problems_are_reported_not_raised(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "assets"
    extra.mkdir()
    missing = tmp_path / "nope"
    env = base_env(
        home,
        tmp_path,
        FAL_KEY=KEY,
        FAL_MCP_BASE_URL=emulator.base_url,
        FAL_MCP_ALLOWED_DIRS=os.pathsep.join([str(extra), str(missing)]),
        FAL_MCP_ALLOW_DOTFILES="1",
    )
    result = doctor(env, workdir)
    assert result.returncode == 0, result.stdout
    files = lines(result.stdout, "Files")
    assert any(line.startswith("✓") and f"{workdir} (working directory): readable, writable" in line for line in files)
    assert any(line.startswith("✓") and str(extra) in line for line in files)
    assert any(
        line.startswith("!") and f"{missing} (FAL_MCP_ALLOWED_DIRS) is not an existing directory" in line
        for line in files
    )
    assert any("hidden files and folders allowed" in line for line in files)
    bad = doctor({**env, "FAL_MCP_WAIT_SECONDS": "soon"}, workdir)
    assert bad.returncode == 1 and "Traceback" not in bad.stdout + bad.stderr
    settings = lines(bad.stdout, "Settings")[0]
    assert settings.startswith("✗") and "FAL_MCP_WAIT_SECONDS must be a number" in settings
    assert all(line.startswith("✓") for line in lines(bad.stdout, "Hosts"))  # the rest still ran


def test_client_configs_in_a_fake_home(emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path) -> None:
    write_json(
        home / ".claude.json",
        {
            "mcpServers": {"other": {"command": "npx", "args": ["some-server"]}},
            "projects": {str(workdir): {"mcpServers": {"fal": {"command": "fal-mcp", "env": {"FAL_KEY": KEY}}}}},
        },
    )
    write_json(home / ".cursor" / "mcp.json", {"mcpServers": {"fal": {"command": "uvx", "args": ["fal-mcp"]}}})
    write_json(
        home / ".config" / "Claude" / "claude_desktop_config.json",
        {"mcpServers": {"fal": {"command": "uvx", "args": ["fal-mcp"], "env": {"FAL_KEY": "${FAL_KEY}"}}}},
    )
    write_json(
        workdir / ".vscode" / "mcp.json",
        {"servers": {"fal": {"command": "python", "args": ["-m", "fal_mcp", "--local"]}}},
    )
    write_json(
        workdir / ".mcp.json",
        {"mcpServers": {"fal": {"command": "uvx", "args": ["fal-mcp"], "env": {"FAL_KEY": "${FAL_KEY}"}}}},
    )
    (home / ".codeium" / "windsurf").mkdir(parents=True)
    (home / ".codeium" / "windsurf" / "mcp_config.json").write_text('{"mcpServers": {"fal": ')
    env = base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=emulator.base_url)
    result = doctor(env, workdir)
    clients = {line.split("  ")[0][2:].strip(): line for line in lines(result.stdout, "MCP clients") if "→" not in line}
    assert clients["Claude Code"].startswith("✓") and "FAL_KEY set" in clients["Claude Code"]
    # Claude Code expands ${FAL_KEY} from its environment, and FAL_KEY is set here.
    assert (
        clients["Claude Code (project)"].startswith("✓")
        and "placeholder ${FAL_KEY}" in clients["Claude Code (project)"]
    )
    assert clients["Cursor"].startswith("!") and "FAL_KEY missing" in clients["Cursor"]
    assert clients["Claude Desktop"].startswith("!") and "placeholder ${FAL_KEY}" in clients["Claude Desktop"]
    assert clients["VS Code (project)"].startswith("✓") and "--local" in clients["VS Code (project)"]
    assert clients["Windsurf"].startswith("✗") and "not valid JSON (line 1" in clients["Windsurf"]
    assert result.returncode == 1  # the malformed config is the one problem
    assert "1 problem(s)" in result.stdout
    assert SECRET not in result.stdout
    # Without FAL_KEY in the environment, the project's ${FAL_KEY} cannot be expanded either.
    unset = doctor({k: v for k, v in env.items() if k != "FAL_KEY"}, workdir, "--json")
    checks = json.loads(unset.stdout)["checks"]
    project = next(c for c in checks if c["name"] == "Claude Code (project)")
    assert project["level"] == "warn" and "FAL_KEY is not set in this environment" in project["detail"]


def test_json_output_parses(emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path) -> None:
    result = doctor(base_env(home, tmp_path, FAL_KEY=KEY, FAL_MCP_BASE_URL=emulator.base_url), workdir, "--json")
    report = json.loads(result.stdout)
    assert report["ok"] is True and result.returncode == 0
    assert report["target"] == f"emulator at {emulator.base_url}"
    sections = [c["section"] for c in report["checks"]]
    assert sections.index("Key") < sections.index("Hosts") < sections.index("State") < sections.index("MCP clients")
    assert {c["level"] for c in report["checks"]} <= {"ok", "warn", "fail", "info"}
    assert SECRET not in result.stdout
