"""model_search/model_schema (also without a key), fal_run/fal_stream/fal_realtime, upload_file and its guard."""

from __future__ import annotations

import base64
import os

import pytest
from mcp import Client
from PIL import Image

from fal_mcp.config import Settings
from fal_mcp.server.app import build_server
from tests.server.conftest import make_server
from tests.server.helpers import Progress, call, error_of, structured, text_of

pytestmark = pytest.mark.anyio


async def test_model_search_pages_and_prices(server) -> None:
    async with Client(server) as client:
        first = structured(await call(client, "model_search", {"query": "flux", "limit": 2}))
        assert len(first["models"]) == 2 and first["has_more"]
        ids = {m["endpoint_id"] for m in first["models"]}
        page_two = {"query": "flux", "limit": 2, "cursor": first["next_cursor"]}
        second = structured(await call(client, "model_search", page_two))
        assert ids.isdisjoint(m["endpoint_id"] for m in second["models"])
        video = structured(await call(client, "model_search", {"category": "image-to-video"}))
    assert video["models"] and all(m["category"] == "image-to-video" for m in video["models"])
    flux = next(m for m in first["models"] + second["models"] if m["endpoint_id"] == "fal-ai/flux/dev")
    assert flux["price"] == "$0.025 per megapixel"  # fal's unit is 'megapixels'; a price is per one


async def test_model_schema_summary_and_full(server) -> None:
    async with Client(server) as client:
        summary = structured(await call(client, "model_schema", {"endpoint_id": "fal-ai/flux/dev/image-to-image"}))
        full = structured(await call(client, "model_schema", {"endpoint_id": "fal-ai/flux/dev", "full": True}))
        missing = await call(client, "model_schema", {"endpoint_id": "fal-ai/no-such-model"})
        invalid = await call(client, "model_schema", {"endpoint_id": "https://evil.example/x"})
    fields = {f["name"]: f for f in summary["input"]}
    assert summary["file_fields"] == ["image_url"]
    assert fields["image_url"]["takes_file"] and fields["image_url"]["required"]
    assert fields["strength"]["minimum"] is not None and fields["strength"]["maximum"] == 1
    assert summary["example_input"] and summary["input_schema"] is None
    assert full["input_schema"]["properties"]["prompt"] and full["output_schema"]
    steps = {f["name"]: f for f in full["input"]}["num_inference_steps"]
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (1, 50, 28)
    assert error_of(missing)["kind"] == "not_found" and "model_search" in text_of(missing)
    assert error_of(invalid)["kind"] == "invalid_argument"


async def test_without_a_key_discovery_works_and_paid_tools_say_how_to_fix(settings: Settings) -> None:
    server = build_server(settings, env={})  # no FAL_KEY anywhere
    async with Client(server) as client:
        found = await call(client, "model_search", {"query": "flux"})
        schema = await call(client, "model_schema", {"endpoint_id": "fal-ai/flux/dev"})
        paid = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
        jobs = await call(client, "jobs_list", {})
    assert not found.is_error and structured(found)["models"]
    assert not schema.is_error
    error = error_of(paid)
    assert error["kind"] == "not_configured" and "FAL_KEY" in text_of(paid)
    assert not jobs.is_error


async def test_unexpanded_key_template_is_reported(settings: Settings) -> None:
    server = build_server(settings, env={"FAL_KEY": "${FAL_KEY}"})
    async with Client(server) as client:
        result = await call(client, "queue_submit", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
    assert error_of(result)["kind"] == "not_configured"
    assert "placeholder" in text_of(result)


async def test_fal_run_direct(server) -> None:
    async with Client(server) as client:
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "quick", "seed": 1}}
        result = await call(client, "fal_run", args)
        listed = structured(await call(client, "jobs_list", {"endpoint_id": "fal-ai/flux/dev"}))["jobs"]
    assert not result.is_error, text_of(result)
    job = structured(result)
    assert job["status"] == "COMPLETED" and job["request_id"] and job["output"]["images"]
    recorded = next(j for j in listed if j["request_id"] == job["request_id"])
    assert recorded["status"] == "COMPLETED" and recorded["origin_tool"] == "fal_run" and recorded["result_urls"]


async def test_fal_stream_sends_partials_as_progress(server, mode: str) -> None:
    progress = Progress()
    async with Client(server, mode=mode) as client:
        result = await call(
            client,
            "fal_stream",
            {
                "endpoint_id": "openrouter/router",
                "input": {"prompt": "tell me a story", "model": "google/gemini-2.5-flash"},
            },
            progress,
        )
    assert not result.is_error, text_of(result)
    out = structured(result)
    assert out["events"] >= 2 and out["output"]["partial"] is False and out["output"]["output"]
    partials = [m for m in progress.messages if m and m not in ("completed",)]
    assert len(partials) >= 2
    progress.assert_strictly_increasing()


async def test_fal_realtime_outputs_in_order(server) -> None:
    inputs = [{"prompt": "a red cube", "seed": 1}, {"prompt": "a blue ball", "seed": 2}, {"prompt": "a cat", "seed": 3}]
    async with Client(server) as client:
        result = await call(client, "fal_realtime", {"endpoint_id": "fal-ai/fast-lcm-diffusion", "inputs": inputs})
    assert not result.is_error, text_of(result)
    outputs = structured(result)["outputs"]
    assert len(outputs) == 3 and all(o["images"] for o in outputs)
    assert [o.get("seed") for o in outputs] == [1, 2, 3]


async def test_upload_file_from_path_data_and_refusals(server, workdir) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(workdir / "dot.png")
    (workdir / ".env").write_text("SECRET=1")
    (workdir / ".ssh").mkdir()
    (workdir / ".ssh" / "id_rsa").write_text("key")
    outside = workdir.parent / "outside.txt"
    outside.write_text("no")
    os.symlink(outside, workdir / "link.txt")
    async with Client(server) as client:
        ok = structured(await call(client, "upload_file", {"path": "dot.png"}))
        assert ok["url"].startswith("http") and ok["content_type"] == "image/png" and ok["size"] > 0
        data = base64.b64encode(b"hello fal").decode()
        inline = structured(await call(client, "upload_file", {"data": data, "content_type": "text/plain"}))
        assert inline["size"] == 9
        for path in ("../outside.txt", str(outside), ".env", ".ssh/id_rsa", "link.txt", "missing.png", "."):
            refused = await call(client, "upload_file", {"path": path})
            assert error_of(refused)["kind"] == "refused", path
        none_given = await call(client, "upload_file", {})
        assert error_of(none_given)["kind"] == "invalid_argument"
        private = await call(client, "upload_file", {"url": "http://127.0.0.1:9/secret"})
        assert error_of(private)["kind"] == "refused"
        bad = await call(client, "upload_file", {"data": "not base64!!"})
        assert error_of(bad)["kind"] == "invalid_argument"


async def test_upload_file_dotfiles_allowed_when_configured(settings: Settings, workdir) -> None:
    (workdir / ".config.json").write_text("{}")
    async with Client(make_server(settings, allow_dotfiles=True)) as client:
        result = await call(client, "upload_file", {"path": ".config.json"})
    assert not result.is_error, text_of(result)


async def test_client_roots_replace_the_working_directory(server, workdir, tmp_path) -> None:
    """A client that offers roots (2025-era sessions) decides where files may be read."""
    from mcp.types import ListRootsResult, Root

    project = tmp_path / "project with space"
    project.mkdir()
    (project / "in-root.txt").write_text("inside")
    (workdir / "cwd-only.txt").write_text("cwd")

    async def roots(_context) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=project.as_uri(), name="project")])

    async with Client(server, mode="legacy", list_roots_callback=roots) as client:
        inside = await call(client, "upload_file", {"path": str(project / "in-root.txt")})
        relative = await call(client, "upload_file", {"path": "in-root.txt"})
        outside = await call(client, "upload_file", {"path": str(workdir / "cwd-only.txt")})
    assert not inside.is_error and not relative.is_error, text_of(inside)
    assert error_of(outside)["kind"] == "refused"


def test_prices_read_per_one_unit() -> None:
    from fal_mcp.server.tools.catalog import format_price

    assert format_price(0.1, "compute seconds") == "$0.1 per compute second"
    assert format_price(0.01, "1000 characters") == "$0.01 per 1000 characters"
    assert format_price(0.5, "videos", "EUR") == "EUR 0.5 per video"
    assert format_price(0.02, None) == "$0.02 per request"
    assert format_price(None, "images") is None
