"""Build the Claude Desktop bundle: ``python packaging/mcpb/build.py`` writes ``dist/fal-mcp-<version>.mcpb``.

The bundle is the ``uv`` server type (MCPB manifest 0.4): this package's source, a trimmed
``pyproject.toml`` and a ``uv.lock`` resolved at build time (so every user gets the versions that were
tested); the host runs ``uv run`` in the unpacked bundle, which installs Python and those exact
dependencies on first start (compiled ones such as pydantic and Pillow included, which a bundled
``lib/`` could not carry across platforms). The official CLI (``@anthropic-ai/mcpb``, pinned in
``package.json`` beside this file; ``npm ci --prefix packaging/mcpb``) validates and packs it.

Releasing: ``--server-json server.json --url <release asset URL>`` also writes the bundle into
``server.json`` as an ``mcpb`` package with the packed file's SHA-256. Only do that for the file that is
actually uploaded there: the registry downloads it and checks the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MCPB = HERE / "node_modules" / ".bin" / "mcpb"
ICON = ROOT / ".claude-plugin" / "icon.png"
TOOL_SNAPSHOT = ROOT / "fal_mcp" / "server" / "tool_list.json"
# pyproject tables the bundle does not need: dev tooling only (uv would otherwise install the dev group).
DROPPED_TABLES = re.compile(r"^\[(dependency-groups|tool\.(pytest|ruff)[^\]]*)\]$")


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def bundle_name() -> str:
    return f"fal-mcp-{version()}.mcpb"


def trimmed_pyproject(text: str) -> str:
    """``pyproject.toml`` without the dev-only tables (whole tables, header to the next header)."""
    kept: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            dropping = bool(DROPPED_TABLES.match(line.strip()))
        if not dropping:
            kept.append(line)
    return "".join(kept).rstrip() + "\n"


def manifest() -> dict[str, Any]:
    """The checked-in manifest with the tool list filled in from the server's (drift-tested) snapshot."""
    doc = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    tools = json.loads(TOOL_SNAPSHOT.read_text(encoding="utf-8"))["tools"]
    doc["tools"] = [{"name": tool["name"], "description": tool["description"]} for tool in tools]
    doc["tools_generated"] = False
    return doc


def stage(directory: Path) -> Path:
    """Lay the bundle's files out in ``directory`` (emptied first)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copytree(
        ROOT / "fal_mcp", directory / "fal_mcp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    )
    (directory / "pyproject.toml").write_text(
        trimmed_pyproject((ROOT / "pyproject.toml").read_text(encoding="utf-8")), encoding="utf-8"
    )
    for name in ("README.md", "LICENSE"):  # the README is the package's readme; LICENSE once it exists
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, directory / name)
    shutil.copy2(ICON, directory / "icon.png")
    (directory / "manifest.json").write_text(json.dumps(manifest(), indent=2) + "\n", encoding="utf-8")
    lock(directory)
    return directory


def lock(directory: Path) -> None:
    """Resolve the dependencies for every platform into ``directory/uv.lock`` (needs uv and the index)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not installed: pip install uv (it is in the dev group)")
    done = subprocess.run(
        [uv, "lock", "--quiet", "--directory", str(directory)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"uv lock failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def mcpb(*args: str) -> str:
    """Run the pinned ``mcpb`` CLI; returns its output, raising with it on failure."""
    if not MCPB.exists():
        raise SystemExit(f"{MCPB} is missing: run `npm ci --prefix {HERE.relative_to(ROOT)}` first")
    done = subprocess.run([str(MCPB), *args], capture_output=True, text=True, check=False, timeout=300)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"mcpb {' '.join(args)} failed ({done.returncode}):\n{output}")
    return output


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(out_dir: Path) -> Path:
    """Stage, validate and pack; returns the ``.mcpb`` file."""
    staged = stage(out_dir / "mcpb-stage")
    mcpb("validate", str(staged / "manifest.json"))
    bundle = out_dir / bundle_name()
    bundle.unlink(missing_ok=True)
    mcpb("pack", str(staged), str(bundle))
    return bundle


def mcpb_package(url: str, file_sha256: str) -> dict[str, Any]:
    """The ``server.json`` package entry for a released bundle (registry schema 2025-12-11)."""
    return {
        "registryType": "mcpb",
        "identifier": url,
        "version": version(),
        "fileSha256": file_sha256,
        "transport": {"type": "stdio"},
    }


def write_server_json(path: Path, url: str, file_sha256: str) -> None:
    """Add (or replace) the ``mcpb`` package of ``server.json``, keeping every other package as it is."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    packages = [p for p in doc.get("packages", []) if p.get("registryType") != "mcpb"]
    doc["packages"] = [*packages, mcpb_package(url, file_sha256)]
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist", help="where the .mcpb goes (default: dist/)")
    parser.add_argument("--server-json", type=Path, help="release: write the bundle into this server.json")
    parser.add_argument("--url", help="release: the public https URL the .mcpb is uploaded to (with --server-json)")
    args = parser.parse_args(argv)
    if bool(args.server_json) != bool(args.url):
        parser.error("--server-json and --url go together")
    if args.url and not args.url.startswith("https://"):
        parser.error("--url must be an https URL (the registry downloads the bundle from it)")
    bundle = build(args.out_dir)
    digest = sha256(bundle)
    if args.server_json:
        write_server_json(args.server_json, args.url, digest)
    sys.stdout.write(f"{bundle}\nsha256 {digest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
