"""The Gemini CLI extension (``gemini-extension.json`` at the repository root), checked by the pinned Gemini
CLI itself: it validates the checkout, installs it into a throw-away HOME, stores the key the way a user
enters it, loads the skills, and connects to the server it launches.

The extension runs ``uv run --directory ${extensionPath} --no-dev fal-mcp``: the same command for an
extension installed from GitHub (a clone) and for a checkout linked with ``gemini extensions link .``, so it
works before the package is on PyPI. ``uv`` is a logging stand-in that runs the real uv with this
machine's CA bundle (its network proxies TLS; the Gemini CLI passes servers only HOME, PATH and the
declared settings).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GEMINI = ROOT / "tests" / "gemini" / "node_modules" / ".bin" / "gemini"
MANIFEST = ROOT / "gemini-extension.json"
# What a clone of the repository gives the extension: the manifest, the package, and the skills.
EXTENSION_FILES = ("gemini-extension.json", "pyproject.toml", "README.md", "fal_mcp", "skills")


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def require_gemini() -> Path:
    if not GEMINI.exists():
        pytest.fail(f"the pinned Gemini CLI is missing ({GEMINI}): run `npm ci --prefix tests/gemini`")
    return GEMINI


def gemini(args: list[str], home: Path, *, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [str(require_gemini()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
        env={
            "HOME": str(home),
            "PATH": os.pathsep.join([str(home / "bin"), os.environ["PATH"]]),
            "NO_COLOR": "1",
            **(env or {}),
        },
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def uv_shim(home: Path) -> Path:
    """``uv`` first on PATH: logs what the server was started with, then runs the real uv."""
    real = shutil.which("uv")
    if real is None:
        pytest.fail("uv is missing: pip install -e . --group dev")
    (home / "bin").mkdir(parents=True, exist_ok=True)
    log = home / "uv.log"
    ca = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    cache = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")
    shim = home / "bin" / "uv"
    shim.write_text(
        "#!/bin/sh\n"
        'printf "%s FAL_KEY=%s FAL_MCP_MAX_COST_USD=%s\\n" "$*" "$FAL_KEY" "$FAL_MCP_MAX_COST_USD"'
        f" >> {shlex.quote(str(log))}\n"
        f"SSL_CERT_FILE={shlex.quote(ca)} UV_CACHE_DIR={shlex.quote(cache)} UV_PYTHON_DOWNLOADS=never "
        f'exec {shlex.quote(real)} "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    return log


def staged_checkout(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in EXTENSION_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, directory / name)
    return directory


def test_manifest_names_the_server_its_settings_and_this_version() -> None:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["name"] == "fal" and manifest["version"] == version()
    assert manifest["mcpServers"] == {
        "fal": {"command": "uv", "args": ["run", "--directory", "${extensionPath}", "--no-dev", "--quiet", "fal-mcp"]}
    }
    settings = {setting["envVar"]: setting for setting in manifest["settings"]}
    assert settings["FAL_KEY"]["sensitive"] is True  # the system keychain, not a plain .env
    assert settings["FAL_MCP_MAX_COST_USD"]["sensitive"] is False


def test_gemini_cli_validates_the_checkout_as_an_extension(tmp_path: Path) -> None:
    code, output = gemini(["extensions", "validate", str(ROOT)], tmp_path)
    assert code == 0 and "successfully validated" in output, output


def test_gemini_validate_is_live_it_rejects_a_bad_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    (bad / "gemini-extension.json").write_text(json.dumps({**manifest, "name": "fal mcp"}), encoding="utf-8")
    code, output = gemini(["extensions", "validate", str(bad)], tmp_path)
    assert code != 0 and "Invalid extension name" in output, output


@pytest.mark.timeout(300)  # the server's first start installs its dependencies
def test_installed_extension_stores_the_key_loads_the_skills_and_connects(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    log = uv_shim(home)
    checkout = staged_checkout(tmp_path / "fal-mcp")
    code, output = gemini(["extensions", "install", str(checkout), "--consent", "--skip-settings"], home, stdin="y\n")
    assert code == 0 and 'Extension "fal" installed successfully and enabled.' in output, output
    code, output = gemini(["extensions", "config", "fal", "fal.ai API key"], home, stdin="gemini-test-key\n")
    assert code == 0 and 'Setting "fal.ai API key" updated.' in output, output
    code, output = gemini(["extensions", "config", "fal", "Cost limit per call (USD)"], home, stdin="2.5\n")
    assert code == 0, output

    installed = home / ".gemini" / "extensions" / "fal"
    code, listing = gemini(["extensions", "list"], home)
    assert code == 0 and "✓ fal (0.1.0)" in listing, listing
    skills = sorted(p.name for p in (ROOT / "skills").iterdir() if p.is_dir())
    for skill in skills:
        assert f"  {skill}: " in listing, f"skill {skill} not loaded:\n{listing}"
    assert "fal.ai API key: *** (User - Keychain)" in listing  # never in the extension's .env
    assert "gemini-test-key" not in (installed / ".env").read_text(encoding="utf-8")

    # The first start installs the dependencies; `gemini mcp list` only waits 5 s for a server (a
    # session waits 10 minutes), so start it once the way the extension does before listing.
    done = subprocess.run(
        [str(home / "bin" / "uv"), "run", "--directory", str(installed), "--no-dev", "--quiet", "fal-mcp", "--version"],
        capture_output=True,
        text=True,
        timeout=240,
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert done.stdout.strip() == f"fal-mcp {version()}", done.stderr
    command = f"uv run --directory {installed} --no-dev --quiet fal-mcp"
    connected = f"✓ fal (from fal): {command} (stdio) - Connected"
    for _attempt in range(6):  # each listing gives a fresh server 5 s: a busy machine can miss one
        code, output = gemini(["mcp", "list"], home)
        if connected in output:
            break
    assert connected in output, output
    # The key came from the keychain and the limit from the extension's settings, nothing else.
    launches = log.read_text(encoding="utf-8").splitlines()
    assert f"run --directory {installed} --no-dev --quiet fal-mcp FAL_KEY=gemini-test-key FAL_MCP_MAX_COST_USD=2.5" in (
        launches
    )
