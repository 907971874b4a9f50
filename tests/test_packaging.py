"""The wheel, installed into a fresh venv, serves MCP over stdio exactly as ``uvx fal-mcp`` would run it.

Builds the wheel from this checkout, installs it (dependencies from the package index, through pip's
cache) into a new virtual environment, launches that environment's ``fal-mcp`` console script with the
MCP SDK's stdio client, and records every byte the server wrote to stdout to prove it was JSON-RPC only.
"""

from __future__ import annotations

import email
import json
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_TOOLS = {
    "model_search",
    "model_schema",
    "fal_subscribe",
    "fal_run",
    "fal_stream",
    "fal_realtime",
    "queue_submit",
    "queue_status",
    "queue_result",
    "queue_cancel",
    "upload_file",
    "jobs_list",
}


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)])
    [built] = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A brand-new venv with only the wheel (and what it depends on) installed; returns its bin dir."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True, clear=True)
    bin_dir = env_dir / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)])
    return bin_dir


def test_wheel_holds_the_package_its_metadata_and_no_tests(wheel: Path) -> None:
    meta = project()
    assert wheel.name == f"fal_mcp-{meta['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"fal_mcp-{meta['version']}.dist-info"
        metadata = email.message_from_string(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"fal_mcp", dist_info}, top_level
    for module in ("fal_mcp/__init__.py", "fal_mcp/cli.py", "fal_mcp/server/app.py", "fal_mcp/emulator/app.py"):
        assert module in names
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/") or "conftest" in n]
    # The emulator's catalog: fal's documents with their attribution and licence, and its metadata.
    documents = [n for n in names if n.startswith("fal_mcp/emulator/data/openapi/") and n.endswith(".json.gz")]
    assert len(documents) >= 110 and "fal_mcp/emulator/data/catalog.json" in names
    assert "MIT License" in zipfile.ZipFile(wheel).read("fal_mcp/emulator/data/SOURCES.md").decode()
    assert wheel.stat().st_size < 2 * 1024 * 1024  # the vendored documents stay small
    assert metadata["Name"] == meta["name"] and metadata["Version"] == meta["version"]
    assert "fal-mcp = fal_mcp.cli:main" in entry_points
    # The MCP Registry proves PyPI ownership by finding this marker in the published description.
    assert "mcp-name: io.github.fal-mcp/fal-mcp" in metadata.get_payload()


def non_json_rpc_lines(path: Path) -> list[str]:
    """Lines of a recorded stdout that are not JSON-RPC 2.0 messages (a stdio server must write none)."""
    bad = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            bad.append(line)
    return bad


def stdio_params(script: Path, stdout_copy: Path, tmp_path: Path, *, prelude: str = "") -> StdioServerParameters:
    """Launch ``script`` the way a client launches ``uvx fal-mcp``, with its stdout teed into ``stdout_copy``."""
    return StdioServerParameters(
        command="/bin/sh",
        args=["-c", f'{{ {prelude} "$0"; }} | tee "$1"', str(script), str(stdout_copy)],
        env={
            "FAL_KEY": "packaging-test-key",
            "HOME": str(tmp_path),
            "FAL_MCP_LEDGER": str(tmp_path / "ledger.sqlite3"),
            "PATH": "/usr/bin:/bin",
        },
        cwd=str(tmp_path),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])  # legacy: the initialize handshake today's hosts use
async def test_installed_console_script_serves_stdio_with_only_json_rpc_on_stdout(
    installed: Path, tmp_path: Path, mode: str
) -> None:
    stdout_copy = tmp_path / "stdout.jsonl"
    with anyio.fail_after(60):
        async with Client(stdio_params(installed / "fal-mcp", stdout_copy, tmp_path), mode=mode) as client:
            tools = (await client.list_tools()).tools
            info = client.server_info
    assert {tool.name for tool in tools} == EXPECTED_TOOLS
    assert (info.name, info.version) == ("fal", project()["version"])
    assert stdout_copy.read_text(encoding="utf-8").strip(), "the server wrote nothing to stdout"
    assert non_json_rpc_lines(stdout_copy) == []


@pytest.mark.anyio
async def test_stdout_recording_catches_a_stray_print(installed: Path, tmp_path: Path) -> None:
    """The check above is live: one stray line on stdout (as a ``print`` would write) is caught."""
    stdout_copy = tmp_path / "stdout.jsonl"
    params = stdio_params(installed / "fal-mcp", stdout_copy, tmp_path, prelude="echo 'starting fal-mcp';")
    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as client:
            await client.list_tools()
    assert non_json_rpc_lines(stdout_copy) == ["starting fal-mcp"]


def test_installed_console_script_reports_its_version(installed: Path) -> None:
    done = run([str(installed / "fal-mcp"), "--version"])
    assert done.stdout.strip() == f"fal-mcp {project()['version']}"


def test_wheel_and_sdist_carry_the_mit_license(wheel: Path, tmp_path: Path) -> None:
    """The LICENSE file the metadata promises ships in both distributions and is named in their metadata."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project()["license"] == "MIT" and text.startswith("MIT License\n")
    dist_info = f"fal_mcp-{project()['version']}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_string(archive.read(f"{dist_info}/METADATA").decode())
        assert archive.read(f"{dist_info}/licenses/LICENSE").decode() == text
    assert metadata["License-Expression"] == "MIT" and metadata.get_all("License-File") == ["LICENSE"]

    uv = Path(sys.executable).with_name("uv")  # a dev dependency
    run([str(uv), "build", "--sdist", "--quiet", "--out-dir", str(tmp_path), str(ROOT)])
    [sdist] = tmp_path.glob("*.tar.gz")
    root = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        pkg_info = email.message_from_bytes(archive.extractfile(f"{root}/PKG-INFO").read())  # type: ignore[union-attr]
        assert archive.extractfile(f"{root}/LICENSE").read().decode() == text  # type: ignore[union-attr]
    assert pkg_info["License-Expression"] == "MIT" and pkg_info.get_all("License-File") == ["LICENSE"]
