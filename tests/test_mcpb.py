"""The Claude Desktop bundle (.mcpb): built by its one command, checked and packed by the official CLI,
unpacked, and launched exactly as the host launches it.

The launch command comes from ``getMcpConfigForManifest`` of the pinned ``@anthropic-ai/mcpb`` package,
the function Claude Desktop uses to turn a manifest and the user's settings into a command line, and is
then run with the MCP SDK's stdio client: ``uv run`` in the unpacked bundle installs the locked
dependencies and serves the tools. The only differences from a desktop are the loopback emulator in
place of fal (``FAL_MCP_BASE_URL``) and ``UV_PYTHON_DOWNLOADS=never`` (this machine cannot download a
Python; the host's uv can, and here uses the interpreter on PATH).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from fal_mcp.config import ConfigError, Settings
from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from tests.emulators import shared_emulator
from tests.server.helpers import call, error_of, structured, text_of
from tests.test_metadata import declared_keys, registry_schema, schema_errors
from tests.test_packaging import EXPECTED_TOOLS

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging" / "mcpb"
MCPB_PACKAGE = PACKAGING / "node_modules" / "@anthropic-ai" / "mcpb"
MCPB = PACKAGING / "node_modules" / ".bin" / "mcpb"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
EXPENSIVE = {"prompt": "a cathedral of glass", "image_size": "square_hd", "num_images": 4}

# Run by node: the host's own function turns manifest + user settings into the server's command line.
HOST_CONFIG_JS = """
import { readFileSync } from "node:fs";
const [module, bundleDir, userConfig, home] = process.argv.slice(1);
const { getMcpConfigForManifest } = await import(module);
const manifest = JSON.parse(readFileSync(`${bundleDir}/manifest.json`, "utf-8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: bundleDir,
  systemDirs: {
    HOME: home, DESKTOP: `${home}/Desktop`, DOCUMENTS: `${home}/Documents`, DOWNLOADS: `${home}/Downloads`,
  },
  userConfig: JSON.parse(userConfig),
  pathSeparator: "/",
});
process.stdout.write(JSON.stringify(config ?? null));
"""


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def checked_in_manifest() -> dict[str, Any]:
    return json.loads((PACKAGING / "manifest.json").read_text(encoding="utf-8"))


def machine_env() -> dict[str, str]:
    """This environment, with uv told about the machine's CA bundle (the network here proxies TLS; uv
    otherwise trusts only its built-in roots, while pip reads the bundle from its own config)."""
    env = dict(os.environ)
    if "SSL_CERT_FILE" not in env and Path(SYSTEM_CA).exists():
        env["SSL_CERT_FILE"] = SYSTEM_CA
    return env


def run(argv: list[str], **kwargs: Any) -> str:
    kwargs.setdefault("env", machine_env())
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{output}"
    return output


def require_mcpb() -> Path:
    if not MCPB.exists():
        pytest.fail(f"the pinned mcpb CLI is missing ({MCPB}): run `npm ci --prefix packaging/mcpb`")
    return MCPB


def require_uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is missing: pip install -e . --group dev (the host runs the bundle with uv)")
    return uv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented one command: ``python packaging/mcpb/build.py`` (validates and packs with mcpb)."""
    require_mcpb()
    require_uv()
    out = tmp_path_factory.mktemp("dist")
    output = run([sys.executable, str(PACKAGING / "build.py"), "--out-dir", str(out)])
    built = out / f"fal-mcp-{version()}.mcpb"
    assert output.splitlines()[0] == str(built)
    return built


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("Claude Extensions") / "local.mcpb.fal-mcp"
    run([str(require_mcpb()), "unpack", str(bundle), str(directory)])
    return directory


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    yield from shared_emulator()


def host_launch_config(bundle_dir: Path, user_config: dict[str, Any], home: Path) -> dict[str, Any] | None:
    module = (MCPB_PACKAGE / "dist" / "node.js").as_uri()
    output = run(
        [
            "node",
            "--input-type=module",
            "-e",
            HOST_CONFIG_JS,
            module,
            str(bundle_dir),
            json.dumps(user_config),
            str(home),
        ]
    )
    return json.loads(output)


def host_params(config: dict[str, Any], home: Path, cwd: Path, **extra_env: str) -> StdioServerParameters:
    """Spawn the host's command: the desktop's environment (no FAL_* of ours) plus the manifest's ``env``."""
    inherited = {k: v for k, v in machine_env().items() if not k.startswith(("FAL_", "UV_"))}
    cache = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")  # keep reruns fast
    env = {**inherited, "HOME": str(home), "UV_CACHE_DIR": cache, "UV_PYTHON_DOWNLOADS": "never"}
    env |= config.get("env", {}) | extra_env
    return StdioServerParameters(command=config["command"], args=config["args"], env=env, cwd=str(cwd))


# --- the manifest -------------------------------------------------------------------------------------------


def test_manifest_uses_the_newest_version_the_cli_knows_and_the_uv_server_type() -> None:
    constants = (MCPB_PACKAGE / "dist" / "shared" / "constants.js").read_text(encoding="utf-8")
    [latest] = re.findall(r'LATEST_MANIFEST_VERSION = "([\d.]+)"', constants)
    manifest = checked_in_manifest()
    assert manifest["manifest_version"] == latest
    assert manifest["version"] == version()
    server = manifest["server"]
    assert server["type"] == "uv"  # the host installs Python and the compiled dependencies (pydantic, Pillow)
    assert (ROOT / server["entry_point"]).is_file()
    assert server["mcp_config"]["command"] == "uv"
    assert server["mcp_config"]["args"] == ["run", "--directory", "${__dirname}", "--no-dev", "fal-mcp"]


def test_user_settings_map_onto_real_settings_with_real_defaults() -> None:
    manifest = checked_in_manifest()
    fields, env = manifest["user_config"], manifest["server"]["mcp_config"]["env"]
    key = fields["fal_key"]
    assert key["type"] == "string" and key["sensitive"] is True and key["required"] is True
    assert env["FAL_KEY"] == "${user_config.fal_key}"
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "fal_mcp").rglob("*.py"))
    mapped = {value.removeprefix("${user_config.").removesuffix("}"): name for name, value in env.items()}
    assert set(mapped) == set(fields), "every setting reaches the server, and nothing else is passed"
    baseline = Settings.from_env({})
    for field, name in mapped.items():
        assert f'"{name}"' in source, f"{name} is not read by the server"
        option = fields[field]
        assert option["title"] and option["description"]
        if field != "fal_key":
            assert option.get("required") is False and not option.get("sensitive")
        if "default" in option:
            assert Settings.from_env({name: str(option["default"])}) == baseline, f"{field}'s default is not ours"
    assert fields["max_cost_usd"].get("default") is None, "no limit unless the user sets one"


def test_an_optional_setting_left_empty_in_the_host_is_unset_but_other_placeholders_still_fail() -> None:
    unset = {
        "FAL_MCP_MAX_COST_USD": "${user_config.max_cost_usd}",
        "FAL_MCP_ALLOWED_DIRS": "${user_config.allowed_dir}",
    }
    assert Settings.from_env(unset) == Settings.from_env({})
    with pytest.raises(ConfigError, match="FAL_MCP_MAX_COST_USD"):
        Settings.from_env({"FAL_MCP_MAX_COST_USD": "${MAX_COST}"})  # a placeholder some other host failed to expand


def test_validate_is_live_it_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = copy.deepcopy(checked_in_manifest())
    broken["user_config"]["fal_key"]["type"] = "secret"
    (tmp_path / "manifest.json").write_text(json.dumps(broken), encoding="utf-8")
    done = subprocess.run(
        [str(require_mcpb()), "validate", str(tmp_path / "manifest.json")], capture_output=True, text=True
    )
    assert done.returncode != 0 and "user_config.fal_key.type" in done.stdout, done.stdout


# --- the packed bundle ---------------------------------------------------------------------------------------


def test_bundle_holds_the_server_its_lock_and_icon_and_no_dev_tooling(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        pyproject = tomllib.loads(archive.read("pyproject.toml").decode())
        icon = archive.read("icon.png")
    assert {
        "manifest.json",
        "pyproject.toml",
        "uv.lock",
        "icon.png",
        "README.md",
        manifest["server"]["entry_point"],
    } <= names
    assert "fal_mcp/server/tool_list.json" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", ".venv/", "node_modules/"))]
    assert pyproject["project"] == tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "dependency-groups" not in pyproject, "uv run would install the dev group"
    assert icon == (ROOT / ".claude-plugin" / "icon.png").read_bytes()
    assert {t["name"] for t in manifest["tools"]} == EXPECTED_TOOLS and manifest["tools_generated"] is False
    assert all(t["description"] for t in manifest["tools"])


def test_release_writes_the_bundle_into_server_json_with_its_sha256(tmp_path: Path) -> None:
    server_json = tmp_path / "server.json"
    shutil.copy2(ROOT / "server.json", server_json)
    url = f"https://github.com/fal-mcp/fal-mcp/releases/download/v{version()}/fal-mcp-{version()}.mcpb"
    build = [sys.executable, str(PACKAGING / "build.py"), "--out-dir", str(tmp_path / "dist")]
    output = run([*build, "--server-json", str(server_json), "--url", url])
    built, digest = Path(output.splitlines()[0]), output.splitlines()[1].removeprefix("sha256 ")
    doc = json.loads(server_json.read_text(encoding="utf-8"))
    assert schema_errors(doc) == []
    before = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))["packages"]
    *kept, package = doc["packages"]
    assert kept == [p for p in before if p["registryType"] != "mcpb"], "other packages are left as they were"
    assert package == {
        "registryType": "mcpb",
        "identifier": url,
        "version": version(),
        "fileSha256": hashlib.sha256(built.read_bytes()).hexdigest(),
        "transport": {"type": "stdio"},
    }
    assert package["fileSha256"] == digest
    assert set(package) <= declared_keys(registry_schema(), "Package")
    # A second release replaces the entry instead of adding another.
    run([*build, "--server-json", str(server_json), "--url", url])
    again = json.loads(server_json.read_text(encoding="utf-8"))["packages"]
    assert [p["registryType"] for p in again].count("mcpb") == 1
    refused = subprocess.run([*build, "--server-json", str(server_json)], capture_output=True, text=True)
    assert refused.returncode == 2 and "--server-json and --url go together" in refused.stderr


def test_checked_in_server_json_names_a_bundle_only_with_a_release_hash() -> None:
    """Until a release uploads a bundle (and build.py --server-json records it), server.json names none."""
    for package in json.loads((ROOT / "server.json").read_text(encoding="utf-8"))["packages"]:
        if package["registryType"] == "mcpb":
            assert package["version"] == version() and re.fullmatch(r"[a-f0-9]{64}", package["fileSha256"])
            assert package["identifier"].startswith("https://github.com/fal-mcp/fal-mcp/releases/download/")


# --- launched the way the host launches it ---------------------------------------------------------------------


def test_host_refuses_to_launch_without_the_required_key(unpacked: Path, tmp_path: Path) -> None:
    assert host_launch_config(unpacked, {}, tmp_path) is None


@pytest.mark.timeout(300)  # the first start installs the dependencies
@pytest.mark.anyio
async def test_unpacked_bundle_serves_tools_list_with_only_the_key_set(unpacked: Path, tmp_path: Path) -> None:
    config = host_launch_config(unpacked, {"fal_key": "bundle-test-key"}, tmp_path)
    assert config is not None and config["command"] == "uv"
    assert config["args"] == ["run", "--directory", str(unpacked), "--no-dev", "fal-mcp"]
    # Optional settings the user left empty arrive as their placeholder; the server reads them as unset.
    assert config["env"]["FAL_MCP_MAX_COST_USD"] == "${user_config.max_cost_usd}"
    assert config["env"]["FAL_MCP_WAIT_SECONDS"] == "${user_config.wait_seconds}"  # unset: the wait follows the client
    require_uv()
    with anyio.fail_after(240):  # the first start installs the locked dependencies
        async with Client(host_params(config, tmp_path, tmp_path)) as client:
            tools = (await client.list_tools()).tools
            info = client.server_info
    assert {tool.name for tool in tools} == EXPECTED_TOOLS
    assert (info.name, info.version) == ("fal", version())


@pytest.mark.timeout(300)
@pytest.mark.anyio
async def test_unpacked_bundle_applies_the_users_cost_limit_and_files_folder(
    unpacked: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    folder, cwd = tmp_path / "My Pictures", tmp_path / "desktop-cwd"
    folder.mkdir()
    cwd.mkdir()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(folder / "input.png")
    settings = {"fal_key": "bundle-test-key", "max_cost_usd": 0.01, "allowed_dir": str(folder)}
    config = host_launch_config(unpacked, settings, tmp_path)
    assert config is not None
    params = host_params(config, tmp_path, cwd, FAL_MCP_BASE_URL=emulator.base_url)
    with anyio.fail_after(240):
        async with Client(params) as client:
            refused = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": EXPENSIVE})
            uploaded = await call(client, "upload_file", {"path": str(folder / "input.png")})
    assert error_of(refused)["kind"] == "cost_limit", text_of(refused)
    assert emulator.state.submissions[f"fal-ai/flux/dev {input_digest(EXPENSIVE)}"] == 0
    assert not uploaded.is_error, text_of(uploaded)
    assert structured(uploaded)["url"].startswith("http")
