"""The files that describe fal-mcp to the outside world, each checked against what it describes.

server.json against the MCP Registry's schema and rules, every version pin against pyproject, the
plugin and the client configs through the real Claude Code CLI (which launches this checkout's server),
and the skills against the server's real tool list, so none of them can drift silently.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from jsonschema import Draft7Validator
from mcp import Client
from mcp.types import Tool
from PIL import Image

import fal_mcp
from fal_mcp.config import Settings
from fal_mcp.ledger import default_ledger_path
from fal_mcp.server.app import build_server
from fal_mcp.spend import PAYING_TOOLS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "tests" / "schemas" / "server.schema.2025-12-11.json"
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"
CLAUDE = ROOT / "tests" / "plugin" / "node_modules" / ".bin" / "claude"
CLIENTS = ROOT / "docs" / "clients"
SKILLS = ROOT / "skills"

PLUGIN_NAME = "fal"
SERVER_KEY = "fal"
PLUGIN_PREFIX = f"mcp__plugin_{PLUGIN_NAME}_{SERVER_KEY}__"
# Keys a skill may carry and still load everywhere (Agent Skills spec; claude.ai rejects any other).
PORTABLE_SKILL_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
SKILL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


# --- shared facts ------------------------------------------------------------------------------------


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def version() -> str:
    return project()["version"]


def pinned_spec() -> str:
    """What every launcher runs: ``uvx fal-mcp==<version>``."""
    return f"{project()['name']}=={version()}"


@functools.cache
def tools() -> dict[str, Tool]:
    """The server's real tool list (no key needed to list)."""

    async def list_tools() -> list[Tool]:
        async with Client(build_server(env={})) as client:
            return (await client.list_tools()).tools

    return {tool.name: tool for tool in anyio.run(list_tools)}


def console_script() -> Path:
    """This checkout's ``fal-mcp`` entry point, which ``uvx fal-mcp`` would run."""
    script = Path(sys.executable).parent / "fal-mcp"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project first (pip install -e . --group dev)")
    return script


# --- running the Claude Code CLI ---------------------------------------------------------------------


def require_claude() -> Path:
    if not CLAUDE.exists():
        pytest.fail(
            f"the pinned Claude Code CLI is not installed ({CLAUDE} missing): run `npm ci --prefix tests/plugin`"
        )
    return CLAUDE


def uvx_shim(directory: Path) -> Path:
    """A stand-in ``uvx`` that insists on the pinned spec, logs what it was given, and runs this checkout.

    It lets Claude Code launch the configured command line for real, offline, against the code under test.
    """
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "uvx.log"
    shim = directory / "uvx"
    shim.write_text(
        "#!/bin/sh\n"
        'printf "%s FAL_KEY=%s CLAUDE_PLUGIN_DATA=%s\\n" "$*" "$FAL_KEY" "$CLAUDE_PLUGIN_DATA"'
        f" >> {shlex.quote(str(log))}\n"
        f'if [ "$1" != {shlex.quote(pinned_spec())} ]; then echo "uvx shim: unexpected spec $1" >&2; exit 97; fi\n'
        "shift\n"
        f'exec {shlex.quote(str(console_script()))} "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    return log


def cli_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """A throw-away HOME and TMPDIR, the pinned CLI and the uvx shim first on PATH, and no network chatter."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "PATH": os.pathsep.join([str(home / "bin"), str(require_claude().parent), os.environ.get("PATH", "")]),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        **(env or {}),
    }


def run_cli(argv: list[str], home: Path, *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command under :func:`cli_env`; returns stdout+stderr, failing with both on a non-zero exit."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=90,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output}"
    return output


def run_claude(args: list[str], home: Path, *, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_cli([str(require_claude()), *args], home, cwd=cwd, env=env)


# --- server.json (MCP Registry) ------------------------------------------------------------------------


def registry_schema() -> dict[str, Any]:
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256, "vendored schema was modified"
    return load_json(SCHEMA_PATH)


def schema_errors(doc: Any) -> list[str]:
    validator = Draft7Validator(registry_schema(), format_checker=Draft7Validator.FORMAT_CHECKER)
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc))


def declared_keys(schema: dict[str, Any], definition: str) -> set[str]:
    """Property names a definition allows, following ``$ref`` and ``allOf`` (the schema never closes them)."""
    node = schema["definitions"][definition]
    keys = set(node.get("properties", {}))
    for part in node.get("allOf", []):
        if "$ref" in part:
            keys |= declared_keys(schema, part["$ref"].rsplit("/", 1)[-1])
        keys |= set(part.get("properties", {}))
    return keys


def test_vendored_registry_schema_is_the_pinned_draft7_file() -> None:
    schema = registry_schema()
    Draft7Validator.check_schema(schema)
    assert schema["$ref"] == "#/definitions/ServerDetail"


def test_server_json_validates_against_the_registry_schema_with_formats() -> None:
    doc = load_json(ROOT / "server.json")
    assert schema_errors(doc) == []
    # The format checker must be live (jsonschema[format-nongpl]); otherwise bad URLs would pass.
    bad_url = copy.deepcopy(doc)
    bad_url["repository"]["url"] = "not a url"
    assert any("repository" in error for error in schema_errors(bad_url))
    too_long = copy.deepcopy(doc)
    too_long["description"] = "x" * 101
    assert schema_errors(too_long)


def test_server_json_follows_the_registry_rules_beyond_the_schema() -> None:
    schema = registry_schema()
    doc = load_json(ROOT / "server.json")
    assert doc["$schema"] == SCHEMA_URL
    assert doc["name"].startswith("io.github.")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"mcp-name: {doc['name']}" in readme, "PyPI ownership check reads this marker from the README"
    assert doc["repository"] == {"url": "https://github.com/fal-mcp/fal-mcp", "source": "github"}

    # The schema leaves objects open, so a typo'd or snake_case key would pass it: allow declared keys only.
    assert set(doc) <= declared_keys(schema, "ServerDetail")
    assert set(doc["repository"]) <= declared_keys(schema, "Repository")
    [package] = doc["packages"]
    assert set(package) <= declared_keys(schema, "Package")
    assert set(package["transport"]) <= declared_keys(schema, "StdioTransport")
    for variable in package["environmentVariables"]:
        assert set(variable) <= declared_keys(schema, "KeyValueInput"), variable["name"]

    assert package["registryType"] == "pypi"
    assert package["registryBaseUrl"] == "https://pypi.org"
    assert package["identifier"] == project()["name"]
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    fal_key = next(v for v in package["environmentVariables"] if v["name"] == "FAL_KEY")
    assert fal_key["isRequired"] is True and fal_key["isSecret"] is True


def test_server_json_documents_real_settings_with_their_real_defaults() -> None:
    [package] = load_json(ROOT / "server.json")["packages"]
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "fal_mcp").rglob("*.py"))
    baseline = Settings.from_env({})
    optional = [v for v in package["environmentVariables"] if v["name"] != "FAL_KEY"]
    assert {v["name"] for v in optional} >= {"FAL_MCP_WAIT_SECONDS", "FAL_MCP_MAX_COST_USD"}
    for variable in optional:
        name = variable["name"]
        assert f'"{name}"' in source, f"{name} is not read anywhere in fal_mcp"
        assert variable.get("isRequired", False) is False and not variable.get("isSecret", False)
        if "default" in variable:
            assert Settings.from_env({name: variable["default"]}) == baseline, f"{name}'s documented default is wrong"
    assert baseline.max_cost_usd is None, "server.json says FAL_MCP_MAX_COST_USD is unset by default"


# --- one version everywhere --------------------------------------------------------------------------


def client_configs() -> dict[str, dict[str, Any]]:
    """The ``fal`` entry of every JSON client config, by file name."""
    entries = {}
    for path in sorted(CLIENTS.glob("*.json")):
        doc = load_json(path)
        servers = doc["servers"] if path.name == "vscode.mcp.json" else doc["mcpServers"]
        assert list(servers) == [SERVER_KEY], path.name
        entries[path.name] = servers[SERVER_KEY]
    return entries


def test_one_version_everywhere() -> None:
    expected = version()
    server = load_json(ROOT / "server.json")
    plugin = load_json(ROOT / ".claude-plugin" / "plugin.json")
    mcp_json = load_json(ROOT / ".mcp.json")
    assert fal_mcp.__version__ == expected
    assert server["version"] == server["packages"][0]["version"] == expected
    assert plugin["version"] == expected
    assert mcp_json["mcpServers"][SERVER_KEY]["args"] == [pinned_spec()]
    for name, entry in client_configs().items():
        assert entry["args"] == [pinned_spec()], name
    assert f"uvx {pinned_spec()}" in (CLIENTS / "claude-code.sh").read_text(encoding="utf-8")
    assert f"uvx {pinned_spec()}" in (CLIENTS / "README.md").read_text(encoding="utf-8")


# --- the Claude Code plugin ----------------------------------------------------------------------------


def test_plugin_manifest_marketplace_and_mcp_json() -> None:
    plugin = load_json(ROOT / ".claude-plugin" / "plugin.json")
    assert plugin["$schema"] == "https://json.schemastore.org/claude-code-plugin-manifest.json"
    assert plugin["name"] == PLUGIN_NAME
    assert plugin["displayName"] and plugin["description"]
    assert plugin["license"] == project()["license"] == "MIT"
    assert plugin["repository"] == load_json(ROOT / "server.json")["repository"]["url"]
    assert plugin["keywords"] and all(isinstance(k, str) for k in plugin["keywords"])

    marketplace = load_json(ROOT / ".claude-plugin" / "marketplace.json")
    assert marketplace["$schema"] == "https://json.schemastore.org/claude-code-marketplace.json"
    assert SKILL_NAME.match(marketplace["name"]) and marketplace["owner"]["name"]
    [entry] = marketplace["plugins"]
    assert entry["name"] == PLUGIN_NAME and entry["source"] == "./"

    # Wrapped form: the only one Claude Code accepts for a project-scope .mcp.json, and this repo is both.
    mcp_json = load_json(ROOT / ".mcp.json")
    assert mcp_json == {
        "mcpServers": {SERVER_KEY: {"command": "uvx", "args": [pinned_spec()], "env": {"FAL_KEY": "${FAL_KEY}"}}}
    }

    with Image.open(ROOT / ".claude-plugin" / "icon.png") as icon:
        assert icon.format == "PNG" and icon.width == icon.height and 512 <= icon.width <= 2048
    assert (ROOT / ".claude-plugin" / "icon.png").stat().st_size < 2 * 1024 * 1024


def test_plugin_tool_names_fit_the_64_character_limit() -> None:
    assert len(tools()) == 12
    for name in tools():
        assert len(PLUGIN_PREFIX + name) <= 64, name


def test_claude_plugin_validate_strict_passes_without_warnings(tmp_path: Path) -> None:
    output = run_claude(["plugin", "validate", ".", "--strict"], tmp_path, cwd=ROOT)
    assert "Validation passed" in output
    assert "⚠" not in output and "✘" not in output and "warning" not in output.lower(), output
    assert f'mcpServers: {SERVER_KEY} stdio uvx ["{pinned_spec()}"]' in output
    for skill in sorted(p.name for p in SKILLS.iterdir() if p.is_dir()):
        assert f"skills: {PLUGIN_NAME}:{skill}" in output


def test_claude_code_loads_the_plugin_and_connects_to_its_server(tmp_path: Path) -> None:
    log = uvx_shim(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    env = {"FAL_KEY": "plugin-test-key"}
    output = run_claude(["--plugin-dir", str(ROOT), "mcp", "list"], tmp_path, cwd=work, env=env)
    assert f"plugin:{PLUGIN_NAME}:{SERVER_KEY}: uvx {pinned_spec()} - ✔ Connected" in output, output
    # Claude Code expanded ${FAL_KEY} from its environment and ran exactly the pinned command...
    launched = log.read_text(encoding="utf-8")
    assert f"{pinned_spec()} FAL_KEY=plugin-test-key CLAUDE_PLUGIN_DATA=" in launched
    # ...and exported the plugin's data dir, so the job ledger lives there (and survives plugin updates).
    plugin_data = Path(launched.split("CLAUDE_PLUGIN_DATA=")[1].split()[0])
    assert plugin_data.is_relative_to(tmp_path / ".claude" / "plugins" / "data")
    assert default_ledger_path({"CLAUDE_PLUGIN_DATA": str(plugin_data)}).parent == plugin_data

    details = run_claude(["--plugin-dir", str(ROOT), "plugin", "details", PLUGIN_NAME], tmp_path, cwd=work, env=env)
    skills = sorted(p.name for p in SKILLS.iterdir() if p.is_dir())
    assert f"Skills ({len(skills)})  {', '.join(skills)}" in details, details
    assert f"MCP servers (1)  {SERVER_KEY}" in details


# --- client configs --------------------------------------------------------------------------------------


def test_every_client_has_a_tested_config_linked_from_the_index() -> None:
    files = {p.name for p in CLIENTS.iterdir()}
    assert files == {
        "README.md",
        "claude-code.sh",
        "cursor.mcp.json",
        "windsurf.mcp_config.json",
        "vscode.mcp.json",
        "claude_desktop_config.json",
    }
    index = (CLIENTS / "README.md").read_text(encoding="utf-8")
    for name in files - {"README.md"}:
        assert f"]({name})" in index, f"docs/clients/README.md does not link {name}"


@pytest.mark.parametrize(
    ("file_name", "fal_key"),
    [
        ("cursor.mcp.json", "${env:FAL_KEY}"),
        ("windsurf.mcp_config.json", "${env:FAL_KEY}"),
        ("vscode.mcp.json", "${input:fal-key}"),
        ("claude_desktop_config.json", "paste-your-fal-key-here"),  # Desktop does not expand variables
    ],
)
def test_json_client_config_launches_this_server(file_name: str, fal_key: str) -> None:
    entry = client_configs()[file_name]
    assert entry["command"] == "uvx"
    assert entry["args"] == [pinned_spec()]
    assert entry["env"] == {"FAL_KEY": fal_key}
    if file_name == "vscode.mcp.json":
        assert entry["type"] == "stdio"
        [prompt] = load_json(CLIENTS / file_name)["inputs"]
        assert prompt == {**prompt, "type": "promptString", "id": "fal-key", "password": True}
    # The package the config names provides a console script of the same name that runs.
    script = console_script()
    assert script.name == entry["args"][0].split("==")[0]
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"fal-mcp {version()}"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "stdio" in done.stdout


def test_claude_code_snippet_registers_a_server_that_connects(tmp_path: Path) -> None:
    snippet = (CLIENTS / "claude-code.sh").read_text(encoding="utf-8")
    [command] = [line for line in snippet.splitlines() if line.startswith("claude mcp add")]
    argv = shlex.split(command)
    assert argv[:4] == ["claude", "mcp", "add", SERVER_KEY]  # the name first: --env takes several values
    assert argv[argv.index("--") :] == ["--", "uvx", pinned_spec()]

    log = uvx_shim(tmp_path / "bin")
    run_cli(["sh", str(CLIENTS / "claude-code.sh")], tmp_path, cwd=tmp_path, env={"FAL_KEY": "snippet-test-key"})
    registered = load_json(tmp_path / ".claude.json")["mcpServers"][SERVER_KEY]
    assert registered == {
        "type": "stdio",
        "command": "uvx",
        "args": [pinned_spec()],
        "env": {"FAL_KEY": "snippet-test-key"},
    }
    output = run_claude(["mcp", "get", SERVER_KEY], tmp_path, cwd=tmp_path)
    assert "Status: ✔ Connected" in output, output
    assert f"{pinned_spec()} FAL_KEY=snippet-test-key" in log.read_text(encoding="utf-8")


# --- skills ------------------------------------------------------------------------------------------------

# A tool reference: a backticked identifier of a tool family (not part of a dotted name, path or URL).
TOOL_LIKE = re.compile(r"(?<![\w./-])((?:model|fal|queue|jobs|upload)_[a-z0-9_]+)(?![\w.-])")
PLUGIN_TOOL = re.compile(r"mcp__plugin_[\w-]+")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
KEYWORD = re.compile(r"([A-Za-z_]\w*)\s*=(?!=)")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def skill_dirs() -> list[Path]:
    return sorted(p for p in SKILLS.iterdir() if p.is_dir())


def frontmatter(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path} has no YAML frontmatter"
    head, _, body = text[4:].partition("\n---\n")
    meta = yaml.safe_load(head)  # what Claude Code parses; a stray ': ' in a value breaks it
    assert isinstance(meta, dict), f"{path}: frontmatter is not a mapping"
    return meta, body


def code_texts(markdown: str) -> list[str]:
    """Fenced blocks and inline code spans: where tool names and calls are written."""
    blocks = FENCE.findall(markdown)
    rest = FENCE.sub("", markdown)
    return blocks + [span for _, span in CODE_SPAN.findall(rest)]


def call_arguments(code: str, open_paren: int) -> list[str] | None:
    """Top-level ``name=`` keywords of the call opening at ``open_paren``; ``None`` if it never closes."""
    depth, names, quote, i = 0, [], "", open_paren
    while i < len(code):
        char = code[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return names
        elif depth == 1 and not re.match(r"\w", code[i - 1]) and (match := KEYWORD.match(code, i)):
            names.append(match.group(1))
            i = match.end() - 1
        i += 1
    return None


def reference_problems(
    markdown: str, known: dict[str, set[str]], fields: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """Every tool a text names, and every argument it passes, that the server does not have.

    ``fields`` are names that share a tool family's prefix but are not tools (``queue_position``, ``fal_error``).
    """
    problems = []
    for full in PLUGIN_TOOL.findall(markdown):
        name = full.removeprefix(PLUGIN_PREFIX)
        if not full.startswith(PLUGIN_PREFIX):
            problems.append(f"{full}: not this plugin's prefix {PLUGIN_PREFIX}")
        elif name and name not in known:  # a bare prefix is a pattern (``mcp__plugin_fal_fal__<tool>``)
            problems.append(f"unknown tool {full}")
    for code in code_texts(markdown):
        for match in TOOL_LIKE.finditer(code):
            name = match.group(1)
            if name in fields and name not in known:
                continue
            if name not in known:
                problems.append(f"unknown tool {name}")
                continue
            if code[match.end() : match.end() + 1] == "(":
                arguments = call_arguments(code, match.end())
                for argument in arguments or []:
                    if argument not in known[name]:
                        problems.append(f"{name} has no argument {argument}")
    return problems


def known_tools() -> dict[str, set[str]]:
    return {name: set(tool.input_schema.get("properties", {})) for name, tool in tools().items()}


def property_names(schema: Any) -> set[str]:
    """Every property name anywhere in a JSON schema (nested objects and ``$defs`` included)."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties") or {})
        for value in schema.values():
            names |= property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= property_names(value)
    return names


def error_kinds() -> set[str]:
    """The ``error.kind`` values the server's tools may return (declared in one place)."""
    from fal_mcp.server.errors import ERROR_KINDS

    return set(ERROR_KINDS)


def result_vocabulary() -> set[str]:
    """Names a skill may backtick that are not tools: result and argument fields, error kinds."""
    names = error_kinds()
    for tool in tools().values():
        names |= property_names(tool.input_schema) | property_names(tool.output_schema)
    return names


def test_reference_checker_catches_unknown_tools_and_arguments() -> None:
    known, vocabulary = known_tools(), result_vocabulary()
    good = (
        'Call `fal_subscribe(endpoint_id=\'fal-ai/flux/dev\', input={"prompt": "a=b", "seed": 1})`, '
        'then `queue_result(request_id="x", wait_seconds=5)` or `mcp__plugin_fal_fal__jobs_list`; '
        "`queue_position` and `fal_error` are result fields; "
        "`fal_client.upload_file(path)` and `fal-ai/fast-sdxl` are not tools.\n"
        '```\nupload_file(path="./a.png")\n```\n'
    )
    assert reference_problems(good, known, vocabulary) == []
    bad = (
        '`fal_generate(prompt=1)` then `queue_result(request="x")`, `mcp__plugin_fal_fal__submit`, '
        "`queue_postion`, `mcp__plugin_other_fal__jobs_list`\n"
        '```\nfal_subscribe(endpoint_id="a", inputs={})\n```\n'
    )
    assert sorted(reference_problems(bad, known, vocabulary)) == sorted(
        [
            "unknown tool fal_generate",
            "queue_result has no argument request",
            f"unknown tool {PLUGIN_PREFIX}submit",
            "unknown tool queue_postion",
            f"mcp__plugin_other_fal__jobs_list: not this plugin's prefix {PLUGIN_PREFIX}",
            "fal_subscribe has no argument inputs",
        ]
    )


@pytest.mark.parametrize("skill", skill_dirs(), ids=lambda p: p.name)
def test_skill_frontmatter_follows_the_agent_skills_spec(skill: Path) -> None:
    meta, body = frontmatter(skill / "SKILL.md")
    assert set(meta) <= PORTABLE_SKILL_KEYS, f"non-portable keys: {set(meta) - PORTABLE_SKILL_KEYS}"
    assert meta["name"] == skill.name
    assert SKILL_NAME.match(meta["name"]) and len(meta["name"]) <= 64
    description = meta["description"]
    assert isinstance(description, str) and 1 <= len(description) <= 1024
    assert "<" not in description and ">" not in description, "claude.ai rejects XML tags in descriptions"
    assert "claude" not in meta["name"] and "anthropic" not in meta["name"], "reserved words"
    assert re.search(r"\bUse (when|for|before)\b", description), "the description must say when to use the skill"
    assert len(meta.get("compatibility", "")) <= 500
    assert body.strip()

    allowed = meta.get("allowed-tools")
    if allowed is not None:
        assert isinstance(allowed, str), "allowed-tools is a space-delimited string in the spec"
        for entry in allowed.split():
            assert entry.startswith(PLUGIN_PREFIX), entry
            tool = tools().get(entry.removeprefix(PLUGIN_PREFIX))
            assert tool is not None, f"{entry} is not a tool of this server"
            # Pre-approval never covers spending the user's money or destroying anything. queue_result is
            # allowed: it fetches a job already paid for (and saves files only where download_dir says).
            assert entry.removeprefix(PLUGIN_PREFIX) not in PAYING_TOOLS, entry
            assert tool.annotations is not None and tool.annotations.destructive_hint is False, entry


def test_skills_name_only_real_tools_and_arguments() -> None:
    known, vocabulary = known_tools(), result_vocabulary()
    mentioned: set[str] = set()
    for path in sorted(SKILLS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert reference_problems(text, known, vocabulary) == [], path.relative_to(ROOT)
        for code in code_texts(text):
            mentioned |= {m.group(1) for m in TOOL_LIKE.finditer(code)} & set(known)
        for link in MD_LINK.findall(text):
            if not re.match(r"[a-z]+:", link):
                assert (path.parent / link).resolve().is_file(), f"{path.relative_to(ROOT)}: broken link {link}"
    assert mentioned == set(known), f"tools no skill teaches: {set(known) - mentioned}"


def test_settings_named_in_skills_and_client_docs_exist() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "fal_mcp").rglob("*.py"))
    docs = [*SKILLS.rglob("*.md"), *CLIENTS.iterdir()]
    named = {
        name for path in docs for name in re.findall(r"\bFAL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
    }
    assert "FAL_MCP_MAX_COST_USD" in named
    assert [name for name in sorted(named) if f'"{name}"' not in source] == [], "settings the server does not read"


# What the seed fal API reference (the document the project grew from) covers; the api-reference skill
# must map each onto the tools.
SEED_CAPABILITIES = [
    "fal.subscribe",
    "fal.run",
    "fal.stream",
    "fal.realtime.connect",
    "fal.queue.submit",
    "fal.queue.status",
    "fal.queue.result",
    "fal.queue.cancel",
    "fal.storage.upload",
    "fal.config",
    "proxyUrl",
    "onQueueUpdate",
    "pollInterval",
    "fal_client.subscribe",
    "fal_client.run",
    "fal_client.submit",
    "fal_client.upload_file",
    "fal_client.upload(",
    "fal_client.encode_file",
    "handler.status()",
    "handler.get()",
    "queue.fal.run",
    "https://fal.run/{id}",
    "wss://fal.run",
    "Authorization: Key",
    "FAL_KEY",
    "webhookUrl",
    "webhook_url",
    "priority",
    "hint",
    "start_timeout",
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "enable_safety_checker",
    "sync_mode",
    "negative_prompt",
    "aspect_ratio",
    "audio_url",
    "chunks",
    "401",
    "429",
    "500",
]


def test_api_reference_skill_maps_the_whole_seed_reference() -> None:
    folder = SKILLS / "fal-api-reference"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md")))
    missing = [item for item in SEED_CAPABILITIES if item not in text]
    assert missing == []
    main = (folder / "SKILL.md").read_text(encoding="utf-8")
    for name in tools():
        assert f"`{name}" in main, f"the api-reference skill does not map onto {name}"


def test_every_error_kind_the_server_returns_is_documented() -> None:
    kinds = error_kinds()
    assert len(kinds) >= 15, f"found too few error kinds to be credible: {kinds}"
    documented = set(
        re.findall(
            r"^\| `([a-z_]+)` \|",
            (SKILLS / "fal-api-reference" / "errors.md").read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    )
    assert kinds <= documented, f"undocumented error kinds: {kinds - documented}"


def test_readme_points_at_the_plugin_and_the_client_configs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    marketplace = load_json(ROOT / ".claude-plugin" / "marketplace.json")
    repo = load_json(ROOT / "server.json")["repository"]["url"].removeprefix("https://github.com/")
    assert f"/plugin install {PLUGIN_NAME} --marketplace {repo}" in readme or (
        f"/plugin marketplace add {repo}" in readme and f"/plugin install {PLUGIN_NAME}@{marketplace['name']}" in readme
    ), "README must say how to install the Claude Code plugin"
    assert "docs/clients" in readme, "README must point at docs/clients/ for the other clients"
