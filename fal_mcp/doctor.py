"""``fal-mcp doctor``: is this machine set up to use fal through MCP, and if not, what to fix.

It checks what a failing first call would otherwise reveal one error at a time: the settings, the
key's presence and shape (never printing it), whether each fal host answers, the ledger and cache,
the file roots, and the MCP client configs it can find. Exit 0 when everything required is fine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import anyio
from pydantic import BaseModel

from fal_mcp import __version__
from fal_mcp.fal.auth import MIN_KEY_ID, MIN_KEY_SECRET
from fal_mcp.spend import format_usd

Level = Literal["ok", "warn", "fail", "info"]
MARKS: dict[str, tuple[str, str]] = {"ok": ("✓", "32"), "warn": ("!", "33"), "fail": ("✗", "31"), "info": ("·", "2")}
PROBE_ENDPOINT = "fal-ai/flux/dev"
DEFAULT_TIMEOUT = 5.0
ADD_SERVER = "claude mcp add fal -e FAL_KEY=<your key> -- uvx fal-mcp"
_PLACEHOLDER = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}|^\$([A-Za-z_][A-Za-z0-9_]*)$")


class Check(BaseModel):
    section: str
    name: str
    level: Level
    detail: str
    fix: str | None = None


class Report(BaseModel):
    version: str = __version__
    ok: bool
    target: str = "fal.ai"  # what the hosts were: fal.ai, an emulator URL, or the embedded emulator
    checks: list[Check]


# --- settings and key ----------------------------------------------------------------------------------


def check_settings(env: Mapping[str, str]) -> tuple[Any, list[Check]]:
    """The server's settings, or its defaults plus a failure naming the bad variable (never raised)."""
    from fal_mcp.config import ConfigError, Settings
    from fal_mcp.fal.hosts import FalHosts

    try:
        return Settings.from_env(env), [Check(section="Settings", name="environment", level="ok", detail="valid")]
    except ConfigError as exc:
        failure = Check(section="Settings", name="environment", level="fail", detail=str(exc), fix="correct it")
    try:
        hosts = FalHosts.from_env(env)
    except ValueError:
        return None, [failure]
    return Settings(hosts=hosts), [failure]


def key_shape(key: str, source: str) -> Check:
    """Length, id prefix and form of a key: enough to spot a truncated paste, never the secret."""
    if ":" not in key:
        return Check(
            section="Key",
            name=source,
            level="warn",
            detail=f"set ({len(key)} chars) but not in fal's id:secret form",
            fix="copy the whole key from https://fal.ai/dashboard/keys (it contains a ':')",
        )
    key_id, secret = key.split(":", 1)
    shown = f"set ({len(key)} chars), id {key_id[:4]}…"
    if any(ch.isspace() for ch in key):
        return Check(section="Key", name=source, level="warn", detail=f"{shown}, contains whitespace")
    if len(key_id) < MIN_KEY_ID or len(secret) < MIN_KEY_SECRET:
        return Check(
            section="Key",
            name=source,
            level="warn",
            detail=f"{shown}, shorter than fal keys usually are (id {len(key_id)}, secret {len(secret)} chars)",
            fix="check that the whole key was pasted",
        )
    return Check(section="Key", name=source, level="ok", detail=shown)


def check_key(env: Mapping[str, str], *, local: bool) -> tuple[Any, list[Check]]:
    from fal_mcp.fal.auth import HOW_TO_FIX, resolve_credentials
    from fal_mcp.fal.errors import NotConfiguredError

    try:
        credentials = resolve_credentials(env)
    except NotConfiguredError as exc:
        reason = exc.message.replace(HOW_TO_FIX, "").strip()
        if local:
            return None, [Check(section="Key", name="FAL_KEY", level="info", detail=f"{reason} (not needed: --local)")]
        return None, [Check(section="Key", name="FAL_KEY", level="fail", detail=reason, fix=HOW_TO_FIX)]
    key = credentials.authorization().removeprefix("Key ")
    return credentials, [key_shape(key, credentials.source)]


# --- hosts ---------------------------------------------------------------------------------------------


def _probe_url(role: str, base: str) -> str:
    if role == "platform":
        return f"{base}/models?limit=1"
    if role == "openapi":
        return f"{base}?endpoint_id={PROBE_ENDPOINT}"
    return base + "/"


def _network_reason(exc: Exception, timeout: float) -> str:
    """What went wrong on the way to a host, from the root cause (DNS, refused, TLS, timeout)."""
    import socket
    import ssl

    import httpx2

    if isinstance(exc, httpx2.TimeoutException):
        return f"no answer within {timeout:g}s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed ({cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause}); FAL_MCP_CA_FILE sets a custom CA bundle"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


async def _probe(client: Any, role: str, base: str, timeout: float) -> Check:
    """Any HTTP answer (even 401/404) means the host is reachable; only the network can fail this."""
    import httpx2

    url = _probe_url(role, base)
    started = time.monotonic()
    try:
        response = await client.get(url)
    except httpx2.HTTPError as exc:
        return Check(
            section="Hosts",
            name=role,
            level="fail",
            detail=f"{base} not reachable: {_network_reason(exc, timeout)}",
            fix="check the network, proxy (HTTPS_PROXY) and firewall; offline, use 'fal-mcp --local'",
        )
    ms = (time.monotonic() - started) * 1000
    level: Level = "warn" if response.status_code >= 500 else "ok"
    return Check(
        section="Hosts", name=role, level=level, detail=f"{base} answered HTTP {response.status_code} in {ms:.0f} ms"
    )


async def _verify_key(client: Any, platform: str, credentials: Any, timeout: float) -> Check:
    """One authenticated, free call: does fal accept this key?"""
    import httpx2

    url = f"{platform}/models/pricing?endpoint_id={PROBE_ENDPOINT}"
    try:
        response = await client.get(url, headers={"Authorization": credentials.authorization()})
    except httpx2.HTTPError as exc:
        return Check(section="Hosts", name="key", level="warn", detail=f"not verified: {_network_reason(exc, timeout)}")
    if response.status_code in (401, 403):
        return Check(
            section="Hosts",
            name="key",
            level="fail",
            detail=f"key rejected by {platform} (HTTP {response.status_code})",
            fix="the key is revoked or mistyped: create a new one at https://fal.ai/dashboard/keys",
        )
    if response.is_success:
        return Check(section="Hosts", name="key", level="ok", detail=f"accepted by {platform}")
    return Check(
        section="Hosts",
        name="key",
        level="warn",
        detail=f"not verified: {platform} answered HTTP {response.status_code}",
    )


async def check_hosts(hosts: Any, credentials: Any, *, ca_file: Path | None, timeout: float) -> list[Check]:
    """Probe every role at once (bounded by ``timeout``), then verify the key if the platform answered."""
    import httpx2

    from fal_mcp.fal._http import USER_AGENT, tls_verify

    roles = hosts.roles()
    results: dict[str, Check] = {}
    async with httpx2.AsyncClient(
        timeout=timeout, verify=tls_verify(ca_file), headers={"User-Agent": USER_AGENT}, follow_redirects=False
    ) as client:

        async def probe(role: str, base: str) -> None:
            results[role] = await _probe(client, role, base, timeout)

        async with anyio.create_task_group() as tg:
            for role, base in roles.items():
                tg.start_soon(probe, role, base)
        checks = [results[role] for role in roles]
        if credentials is not None and results["platform"].level != "fail":
            checks.append(await _verify_key(client, hosts.platform, credentials, timeout))
    return checks


# --- ledger, cache, files ------------------------------------------------------------------------------


def _creatable(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if we could create ``path`` under it, else ``None``."""
    for parent in path.parents:
        if parent.exists():
            return parent if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK) else None
    return None


def _dir_writable(path: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _ledger_precheck(path: Path) -> Check | None:
    """A verdict for a ledger path that is unusable or not created yet; ``None`` when the file exists."""
    if "${" in str(path):
        return Check(
            section="State",
            name="ledger",
            level="fail",
            detail=f"{path} contains an unexpanded placeholder",
            fix="set FAL_MCP_LEDGER to a real path (or leave it unset)",
        )
    if path.exists():
        return None
    if _creatable(path) is None:
        return Check(
            section="State",
            name="ledger",
            level="fail",
            detail=f"{path} cannot be created (no write access)",
            fix="set FAL_MCP_LEDGER to a writable path",
        )
    return Check(section="State", name="ledger", level="ok", detail=f"{path} (created on the first job)")


async def check_ledger(settings: Any, env: Mapping[str, str]) -> Check:
    from fal_mcp.ledger import Ledger, LedgerError, default_ledger_path
    from fal_mcp.server.state import LOCAL_OWNER, ledger_owner

    owner = ledger_owner(LOCAL_OWNER, settings.hosts)
    path = Path(settings.ledger_path or default_ledger_path(env))
    problem = await anyio.to_thread.run_sync(_ledger_precheck, path)
    if problem is not None:
        return problem
    try:
        ledger = await anyio.to_thread.run_sync(Ledger.open, path)
    except LedgerError as exc:
        return Check(section="State", name="ledger", level="fail", detail=str(exc))
    async with ledger:
        jobs = await ledger.list(owner, limit=500)
        running = await ledger.list(owner, status="running", limit=500)
        unresolved = await ledger.unresolved_intents(owner)
    count = f"{len(jobs)}{'+' if len(jobs) >= 500 else ''} jobs ({len(running)} running)"
    writable = os.access(path, os.W_OK)
    detail = f"{path}: {count}, {'writable' if writable else 'READ-ONLY'}"
    if not writable:
        return Check(section="State", name="ledger", level="fail", detail=detail, fix="make the file writable")
    if unresolved:
        return Check(
            section="State",
            name="ledger",
            level="warn",
            detail=f"{detail}, {len(unresolved)} submission(s) whose outcome fal has not confirmed",
            fix="start the server with the same key: it reconciles them with fal's request history",
        )
    return Check(section="State", name="ledger", level="ok", detail=detail)


def check_cache(settings: Any) -> Check:
    from fal_mcp.config import default_cache_dir

    path = settings.cache_dir or default_cache_dir()
    if path is None:
        return Check(section="State", name="cache", level="info", detail="disk cache off (FAL_MCP_NO_DISK_CACHE)")
    if path.is_dir():
        if _dir_writable(path):
            return Check(section="State", name="cache", level="ok", detail=f"{path}: writable")
        return Check(
            section="State",
            name="cache",
            level="warn",
            detail=f"{path}: not writable (schemas are fetched again each start)",
            fix="fix its permissions or set FAL_MCP_CACHE_DIR",
        )
    if path.exists():
        return Check(section="State", name="cache", level="warn", detail=f"{path} exists and is not a directory")
    if _creatable(path) is None:
        return Check(section="State", name="cache", level="warn", detail=f"{path} cannot be created")
    return Check(section="State", name="cache", level="ok", detail=f"{path} (created on first use)")


def check_files(settings: Any, cwd: Path) -> list[Check]:
    checks = []
    for label, root in [("working directory", cwd)] + [("FAL_MCP_ALLOWED_DIRS", p) for p in settings.allowed_dirs]:
        if not root.is_dir():
            checks.append(
                Check(
                    section="Files",
                    name="root",
                    level="warn",
                    detail=f"{root} ({label}) is not an existing directory: the server ignores it",
                    fix="create it or remove it from FAL_MCP_ALLOWED_DIRS",
                )
            )
            continue
        access = [word for word, flag in (("readable", os.R_OK), ("writable", os.W_OK)) if os.access(root, flag)]
        level: Level = "ok" if "readable" in access else "warn"
        checks.append(
            Check(
                section="Files",
                name="root",
                level=level,
                detail=f"{root} ({label}): {', '.join(access) or 'no access'}",
            )
        )
    dotfiles = "allowed" if settings.allow_dotfiles else "refused (FAL_MCP_ALLOW_DOTFILES=1 allows them)"
    private = "allowed" if settings.allow_private_urls else "refused (FAL_MCP_ALLOW_PRIVATE_URLS=1 allows them)"
    checks.append(Check(section="Files", name="dotfiles", level="info", detail=f"hidden files and folders {dotfiles}"))
    checks.append(Check(section="Files", name="private URLs", level="info", detail=f"private-network URLs {private}"))
    if settings.max_cost_usd is not None:
        limit = format_usd(settings.max_cost_usd)
        checks.append(Check(section="Files", name="cost limit", level="info", detail=f"{limit} per call"))
    return checks


# --- MCP client configs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    client: str
    path: Path
    servers_key: str = "mcpServers"
    expands_env: bool = False  # the client substitutes ${VAR} from its own environment


def client_config_locations(home: Path, cwd: Path, env: Mapping[str, str]) -> list[ClientConfig]:
    locations = [
        ClientConfig("Claude Code", home / ".claude.json", expands_env=True),
        ClientConfig("Claude Code (project)", cwd / ".mcp.json", expands_env=True),
        ClientConfig("Claude Desktop", home / ".config" / "Claude" / "claude_desktop_config.json"),
        ClientConfig(
            "Claude Desktop", home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        ),
        ClientConfig("Cursor", home / ".cursor" / "mcp.json", expands_env=True),
        ClientConfig("Cursor (project)", cwd / ".cursor" / "mcp.json", expands_env=True),
        ClientConfig("Windsurf", home / ".codeium" / "windsurf" / "mcp_config.json"),
        ClientConfig("VS Code (project)", cwd / ".vscode" / "mcp.json", servers_key="servers", expands_env=True),
    ]
    if env.get("APPDATA"):
        locations.append(ClientConfig("Claude Desktop", Path(env["APPDATA"]) / "Claude" / "claude_desktop_config.json"))
    return locations


def _servers(config: ClientConfig, document: Any, cwd: Path) -> dict[str, Any]:
    if not isinstance(document, dict):
        return {}
    servers = dict(document.get(config.servers_key) or {})
    projects = document.get("projects")
    if config.path.name == ".claude.json" and isinstance(projects, dict):
        # Claude Code keeps per-project servers in ~/.claude.json under projects[<dir>].mcpServers.
        project = projects.get(str(cwd)) or {}
        servers.update(project.get("mcpServers") or {} if isinstance(project, dict) else {})
    return {name: entry for name, entry in servers.items() if isinstance(entry, dict)}


def _runs_fal_mcp(entry: Mapping[str, Any]) -> bool:
    raw_args = entry.get("args")
    args: list[Any] = raw_args if isinstance(raw_args, list) else []
    command = " ".join(str(part) for part in [entry.get("command") or "", *args])
    return "fal-mcp" in command or "fal_mcp" in command


def _key_in_env(block: Mapping[str, Any]) -> tuple[str, str | None]:
    """("set" | "missing" | "placeholder", the placeholder's variable): never the value itself."""
    values = [block.get("FAL_KEY")] if str(block.get("FAL_KEY") or "").strip() else []
    if not values and str(block.get("FAL_KEY_ID") or "").strip() and str(block.get("FAL_KEY_SECRET") or "").strip():
        values = [block["FAL_KEY_ID"], block["FAL_KEY_SECRET"]]
    if not values:
        return "missing", None
    for value in values:
        text = str(value)
        if "${" in text or "{{" in text or text.strip().startswith("$"):
            found = _PLACEHOLDER.search(text.strip())
            return "placeholder", (found.group(1) or found.group(2)) if found else None
    return "set", None


def _server_check(config: ClientConfig, name: str, entry: Mapping[str, Any], env: Mapping[str, str]) -> Check:
    where = f"{_home_relative(config.path)}: server {name!r}"
    raw_args = entry.get("args")
    args: list[Any] = raw_args if isinstance(raw_args, list) else []
    if "--local" in args:
        return Check(section="MCP clients", name=config.client, level="ok", detail=f"{where} runs offline (--local)")
    raw_env = entry.get("env")
    block: Mapping[str, Any] = raw_env if isinstance(raw_env, dict) else {}
    state, variable = _key_in_env(block)
    if state == "set":
        return Check(section="MCP clients", name=config.client, level="ok", detail=f"{where}: FAL_KEY set")
    fix = f'put your key under "env": {{"FAL_KEY": "…"}} in {config.path}'
    if state == "missing":
        return Check(
            section="MCP clients",
            name=config.client,
            level="warn",
            detail=f"{where}: FAL_KEY missing from its env (works only if {config.client} itself has FAL_KEY)",
            fix=fix,
        )
    shown = f"${{{variable}}}" if variable else "a template"
    if config.expands_env and variable and env.get(variable, "").strip():
        return Check(
            section="MCP clients",
            name=config.client,
            level="ok",
            detail=f"{where}: FAL_KEY placeholder {shown}, expanded by {config.client} ({variable} is set here)",
        )
    why = f"{variable} is not set in this environment" if config.expands_env else f"{config.client} may not expand it"
    return Check(
        section="MCP clients",
        name=config.client,
        level="warn",
        detail=f"{where}: FAL_KEY placeholder {shown} ({why})",
        fix=fix,
    )


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def check_clients(home: Path, cwd: Path, env: Mapping[str, str]) -> list[Check]:
    checks: list[Check] = []
    found_any = found_fal = False
    seen: set[Path] = set()
    for config in client_config_locations(home, cwd, env):
        if not config.path.is_file() or config.path in seen:
            continue
        seen.add(config.path)
        found_any = True
        try:
            document = json.loads(config.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            checks.append(
                Check(
                    section="MCP clients",
                    name=config.client,
                    level="fail",
                    detail=f"{_home_relative(config.path)} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                    fix=f"fix the syntax: {config.client} cannot read this file either",
                )
            )
            continue
        except (OSError, UnicodeDecodeError) as exc:
            checks.append(
                Check(section="MCP clients", name=config.client, level="fail", detail=f"{config.path}: {exc}")
            )
            continue
        servers = _servers(config, document, cwd)
        fal = {name: entry for name, entry in servers.items() if _runs_fal_mcp(entry)}
        found_fal = found_fal or bool(fal)
        for name, entry in fal.items():
            checks.append(_server_check(config, name, entry, env))
        if not fal:
            detail = f"{_home_relative(config.path)}: {len(servers)} server(s), none runs fal-mcp"
            checks.append(Check(section="MCP clients", name=config.client, level="info", detail=detail))
    if not found_any:
        checks.append(
            Check(
                section="MCP clients",
                name="configs",
                level="warn",
                detail="no MCP client config found (Claude Code, Claude Desktop, Cursor, Windsurf, VS Code)",
                fix=f"add the server, e.g. {ADD_SERVER}",
            )
        )
    elif not found_fal:
        checks.append(
            Check(
                section="MCP clients",
                name="fal-mcp",
                level="warn",
                detail="none of the configs found runs fal-mcp",
                fix=f"add it, e.g. {ADD_SERVER}",
            )
        )
    return checks


# --- the whole report ----------------------------------------------------------------------------------


async def run_doctor(
    env: Mapping[str, str] | None = None,
    *,
    local: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    home: Path | None = None,
    cwd: Path | None = None,
) -> Report:
    """Every check, in report order. ``local`` checks an embedded emulator instead of fal's hosts."""
    env = os.environ if env is None else env
    home, cwd = home or Path.home(), cwd or Path.cwd()
    settings, checks = check_settings(env)
    local = local or bool(settings is not None and settings.local)
    credentials, key_checks = check_key(env, local=local)
    checks += key_checks
    emulator = None
    if settings is None:
        checks.append(Check(section="Hosts", name="hosts", level="fail", detail="not checked: fix the settings first"))
    else:
        hosts = settings.hosts
        if local:
            from fal_mcp.emulator.server import EmulatorServer
            from fal_mcp.fal.hosts import FalHosts

            try:
                emulator = await anyio.to_thread.run_sync(lambda: EmulatorServer().start())
                hosts = FalHosts.for_base_url(emulator.base_url)
            except (RuntimeError, OSError) as exc:
                detail = f"the embedded emulator did not start: {exc}"
                checks.append(Check(section="Hosts", name="emulator", level="fail", detail=detail))
                hosts = None
        try:
            if hosts is not None:
                checks += await check_hosts(hosts, credentials, ca_file=settings.ca_file, timeout=timeout)
        finally:
            if emulator is not None:
                await anyio.to_thread.run_sync(emulator.stop)
        checks.append(await check_ledger(settings, env))
        checks.append(check_cache(settings))
        checks += check_files(settings, cwd)
    checks += check_clients(home, cwd, env)
    return Report(ok=not any(c.level == "fail" for c in checks), target=_target(env, local), checks=checks)


def _target(env: Mapping[str, str], local: bool) -> str:
    from fal_mcp.fal.hosts import BASE_URL_ENV

    if local:
        return "embedded emulator, --local"
    if env.get(BASE_URL_ENV, "").strip():
        return f"emulator at {env[BASE_URL_ENV].strip()}"
    return "fal.ai"


def render(report: Report, stream: IO[str], *, color: bool) -> None:
    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    stream.write(paint(f"fal-mcp doctor {report.version}", "1") + "\n")
    section = None
    width = max(len(c.name) for c in report.checks)
    fixes_shown: set[str] = set()
    for check in report.checks:
        if check.section != section:
            section = check.section
            fixes_shown.clear()
            title = f"Hosts ({report.target})" if section == "Hosts" else section
            stream.write("\n" + paint(title, "1") + "\n")
        mark, code = MARKS[check.level]
        stream.write(f"  {paint(mark, code)} {check.name.ljust(width)}  {check.detail}\n")
        if check.fix and check.level in ("fail", "warn") and check.fix not in fixes_shown:
            fixes_shown.add(check.fix)
            stream.write(f"    {' ' * width}→ {check.fix}\n")
    problems = sum(c.level == "fail" for c in report.checks)
    warnings = sum(c.level == "warn" for c in report.checks)
    if problems:
        verdict = paint(f"{problems} problem(s)", "31") + f", {warnings} warning(s): fix the ✗ lines above."
    else:
        verdict = paint("ready", "32") + (f", {warnings} warning(s)." if warnings else ".")
    stream.write(f"\n{verdict}\n")
    stream.flush()


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", help="check against the embedded emulator (no key needed)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds per host probe (default {DEFAULT_TIMEOUT:g})"
    )


def main(args: argparse.Namespace) -> int:
    from fal_mcp.log import configure_logging

    configure_logging(level="ERROR", fmt="console")
    try:
        report = anyio.run(lambda: run_doctor(local=args.local, timeout=args.timeout))
    except KeyboardInterrupt:
        return 130
    if args.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        render(report, sys.stdout, color=sys.stdout.isatty())
    return 0 if report.ok else 1
