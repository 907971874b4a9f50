"""The MCP App (in-chat gallery): what it adds for hosts that render Apps, and that nothing else changes."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from fal_mcp.config import Settings
from fal_mcp.server import snapshot
from fal_mcp.server.app import FalMCPServer
from fal_mcp.server.apps import BOUND_TOOLS, GALLERY_HTML, GALLERY_URI
from tests.server.conftest import make_server

pytestmark = pytest.mark.anyio

APPS_HOST = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]
PROMPT = "a lighthouse at dusk"


def dump(result: Any) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


def timeless(text: str) -> str:
    """Seconds measured per call (elapsed_seconds, 'in 0.02 s') are the only thing two calls may differ in."""
    return re.sub(r"\d+\.\d+", "<seconds>", text)


async def test_apps_hosts_get_the_capability_the_resource_and_bound_tools(
    server: FalMCPServer, settings: Settings, mode: str
) -> None:
    async with Client(server, mode=mode, extensions=APPS_HOST) as client:
        if mode == "auto":  # the 2025 handshake has no extensions field; hosts go by the tools' _meta.ui there
            assert EXTENSION_ID in (client.server_capabilities.extensions or {})
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        listed = (await client.list_resources()).resources
        contents = (await client.read_resource(GALLERY_URI)).contents
    for name, tool in tools.items():
        ui = (tool.meta or {}).get("ui")
        assert ui == ({"resourceUri": GALLERY_URI} if name in BOUND_TOOLS else None), name
    assert [(r.uri, r.mime_type) for r in listed] == [(GALLERY_URI, APP_MIME_TYPE)]
    [content] = contents
    assert content.mime_type == APP_MIME_TYPE
    assert content.text == GALLERY_HTML.read_text(encoding="utf-8")
    csp = content.meta["ui"]["csp"]
    # fal's media hosts and the configured (here: emulator) CDN's origin; no network access at all.
    emulator_origin = settings.hosts.cdn.removesuffix("/cdn")
    assert csp == {
        "resourceDomains": ["https://fal.media", "https://*.fal.media", emulator_origin],
        "connectDomains": [],
    }


def test_the_app_is_self_contained_and_small_as_the_readme_says() -> None:
    html = GALLERY_HTML.read_text(encoding="utf-8")
    size = len(html.encode())
    assert size < 24 * 1024
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"`ui://fal/gallery\.html`: \*\*([\d.]+) KB\*\* \(([\d.]+) KB gzipped\)", readme)
    assert stated, "the README states the app's size"
    assert float(stated[1]) == round(size / 1024, 1), size
    assert abs(float(stated[2]) - len(gzip.compress(html.encode(), 9)) / 1024) < 0.3  # zlib versions differ
    # No external script, style, font or fetch: everything it shows arrives through the host from our tools.
    assert not re.search(r"<script[^>]+src|<link|@import|fetch\(|XMLHttpRequest|WebSocket|innerHTML", html)
    assert not re.search(r"https?://", html)


def test_under_local_the_emulator_origin_is_loopback_only() -> None:
    from fal_mcp.server.apps import media_origins

    assert media_origins(Settings(local=True)) == ["https://fal.media", "https://*.fal.media", "http://127.0.0.1:*"]
    assert media_origins(Settings()) == ["https://fal.media", "https://*.fal.media"]


async def test_turned_off_the_server_is_exactly_as_before(settings: Settings, mode: str) -> None:
    """FAL_MCP_APPS=0: no capability, no resource, and the tool list is the snapshot as registered."""
    off = make_server(settings, apps=False)
    assert Settings.from_env({"FAL_MCP_APPS": "0"}).apps is False
    async with Client(off, mode=mode, extensions=APPS_HOST) as client:
        assert not (client.server_capabilities.extensions or {}).get(EXTENSION_ID)
        tools = (await client.list_tools()).tools
        assert (await client.list_resources()).resources == []
    assert snapshot.render(tools) == snapshot.render(await off.registered_tools())
    assert not any((tool.meta or {}).get("ui") for tool in tools)


async def test_what_the_model_reads_is_the_same_with_apps_on_or_off(settings: Settings) -> None:
    lists = []
    for apps in (True, False):
        async with Client(make_server(settings, apps=apps)) as client:
            tools = (await client.list_tools()).tools
        lists.append([(t.name, t.description, t.input_schema, t.output_schema, t.annotations) for t in tools])
    assert lists[0] == lists[1]


async def test_results_are_byte_identical_for_apps_and_other_hosts(settings: Settings, mode: str) -> None:
    """One job, read back by an Apps host from a server with Apps and by a plain host from one without."""
    on, off = make_server(settings, apps=True), make_server(settings, apps=False)
    async with Client(on, mode=mode, extensions=APPS_HOST) as apps_host, Client(off, mode=mode) as plain_host:
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": PROMPT, "seed": 7}}
        first = await apps_host.call_tool("fal_subscribe", args)
        assert first.structured_content["status"] == "COMPLETED", first
        again = [await host.call_tool("fal_subscribe", args) for host in (apps_host, plain_host)]
        ids = {"request_id": first.structured_content["request_id"], "endpoint_id": "fal-ai/flux/dev"}
        results = [await host.call_tool("queue_result", ids) for host in (apps_host, plain_host)]
        statuses = [await host.call_tool("queue_status", ids) for host in (apps_host, plain_host)]
        jobs = [await host.call_tool("jobs_list", {}) for host in (apps_host, plain_host)]
    assert again[0].structured_content["reattached"] is True
    for pair in (again, results, statuses, jobs):
        assert timeless(dump(pair[0])) == timeless(dump(pair[1]))
    assert any(block.type == "image" for block in results[0].content)  # thumbnails as before
