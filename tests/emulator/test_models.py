"""Each built-in model over real HTTP: real pictures, real transformations, fal-shaped schemas and errors."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx2
import jsonschema
import pytest
from PIL import Image, ImageChops, ImageStat

from fal_mcp.emulator.models import default_registry
from fal_mcp.emulator.models.imaging import IMAGE_SIZES
from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import MakeEmulator, client_for, submit, wait_completed
from tests.realdata import openapi_doc, openapi_index

pytestmark = pytest.mark.anyio


async def run(http: httpx2.AsyncClient, endpoint_id: str, data: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/run/{endpoint_id}", json=data)
    assert response.status_code == 200, response.text
    return response.json()


async def fetch_image(http: httpx2.AsyncClient, url: str) -> Image.Image:
    if url.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    response = await http.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


async def test_flux_dev_draws_real_deterministic_images(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    base = {"prompt": "a lighthouse at dusk", "seed": 42, "output_format": "png", "num_inference_steps": 8}
    first = await run(client, "fal-ai/flux/dev", {**base, "image_size": "portrait_16_9", "num_images": 2})
    assert set(first) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}
    assert (first["seed"], first["prompt"], first["has_nsfw_concepts"]) == (42, base["prompt"], [False, False])
    image = first["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == (576, 1024, "image/png")
    assert image["url"].startswith(f"{emulator.base_url}/cdn/files/")
    picture = await fetch_image(client, image["url"])
    assert (picture.format, picture.size) == ("PNG", (576, 1024))
    second_picture = await fetch_image(client, first["images"][1]["url"])
    assert mean_difference(picture, second_picture) > 1  # each image of a batch differs

    again = await run(client, "fal-ai/flux/dev", {**base, "image_size": "portrait_16_9"})
    assert mean_difference(picture, await fetch_image(client, again["images"][0]["url"])) == 0
    other_seed = await run(client, "fal-ai/flux/dev", {**base, "image_size": "portrait_16_9", "seed": 43})
    assert mean_difference(picture, await fetch_image(client, other_seed["images"][0]["url"])) > 1


async def test_flux_dev_sizes_formats_sync_mode_and_billing(client: httpx2.AsyncClient) -> None:
    custom = await client.post(
        "/run/fal-ai/flux/dev", json={"prompt": "p", "image_size": {"width": 1200, "height": 900}, "sync_mode": True}
    )
    assert custom.headers["x-fal-billable-units"] == "2"  # 1.08 MP, rounded up per image
    image = custom.json()["images"][0]
    assert image["url"].startswith("data:image/jpeg;base64,")
    picture = await fetch_image(client, image["url"])
    assert (picture.format, picture.size) == ("JPEG", (1200, 900))
    default = await run(client, "fal-ai/flux/dev", {"prompt": "defaults"})
    assert (default["images"][0]["width"], default["images"][0]["height"]) == (1024, 768)  # landscape_4_3
    assert isinstance(default["seed"], int) and default["timings"]["inference"] > 0


async def test_flux_dev_logs_steps_through_the_queue(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "fal-ai/flux/dev", {"prompt": "queued", "image_size": "square", "seed": 7})
    final = await wait_completed(client, body["status_url"])
    messages = [entry["message"] for entry in final["logs"]]
    assert messages[0] == "Generating 1 image(s) of 512x512, seed 7"
    assert messages[-1] == "Denoising step 28/28"
    assert (await client.get(body["response_url"])).json()["images"][0]["width"] == 512


async def test_flux_rejects_bad_input_and_forbidden_prompts(client: httpx2.AsyncClient) -> None:
    bad = await client.post(
        "/run/fal-ai/flux/dev",
        json={
            "prompt": 5,
            "image_size": "huge",
            "num_inference_steps": 0,
            "guidance_scale": 25,
            "output_format": "gif",
        },
    )
    assert bad.status_code == 422
    found = {tuple(d["loc"]): (d["type"], d.get("ctx")) for d in bad.json()["detail"]}
    assert found == {
        ("body", "prompt"): ("string_type", None),
        ("body", "image_size"): ("one_of", {"expected": list(IMAGE_SIZES)}),
        ("body", "num_inference_steps"): ("greater_than_equal", {"ge": 1}),
        ("body", "guidance_scale"): ("less_than_equal", {"le": 20}),
        ("body", "output_format"): ("one_of", {"expected": ["jpeg", "png"]}),
    }
    too_wide = await client.post("/run/fal-ai/flux/dev", json={"prompt": "p", "image_size": {"width": 20000}})
    assert [(d["loc"], d["type"]) for d in too_wide.json()["detail"]] == [
        (["body", "image_size", "width"], "less_than_equal")
    ]
    flagged = await client.post("/run/fal-ai/flux/dev", json={"prompt": "Something FORBIDDEN here"})
    assert flagged.status_code == 422
    assert flagged.json()["detail"][0]["type"] == "content_policy_violation"
    assert flagged.json()["detail"][0]["loc"] == ["body", "prompt"]


async def test_image_to_image_transforms_a_data_uri(client: httpx2.AsyncClient) -> None:
    source = Image.new("RGB", (96, 64), (200, 30, 30))
    base = {"image_url": data_uri(source), "prompt": "make it blue", "seed": 3, "output_format": "png"}
    strong = await run(client, "fal-ai/flux/dev/image-to-image", {**base, "strength": 0.9})
    weak = await run(client, "fal-ai/flux/dev/image-to-image", {**base, "strength": 0.05})
    strong_picture = await fetch_image(client, strong["images"][0]["url"])
    weak_picture = await fetch_image(client, weak["images"][0]["url"])
    assert strong_picture.size == weak_picture.size == (96, 64)
    assert mean_difference(weak_picture, source) < 10 < mean_difference(strong_picture, source)
    missing = await client.post("/run/fal-ai/flux/dev/image-to-image", json={"prompt": "no image"})
    assert [(d["loc"], d["type"]) for d in missing.json()["detail"]] == [(["body", "image_url"], "missing")]


async def test_image_to_image_reads_files_stored_on_the_emulator(
    emulator: EmulatorServer, client: httpx2.AsyncClient
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buffer, format="PNG")
    url = emulator.base_url + emulator.state.files.put(buffer.getvalue(), "image/png", "green.png")
    body = await submit(
        client,
        "fal-ai/flux/dev/image-to-image",
        {"image_url": url, "prompt": "greener", "strength": 0.01, "num_inference_steps": 10},
    )
    final = await wait_completed(client, body["status_url"])
    assert final["logs"][0]["message"].startswith("Loaded input image 40x30")
    output = (await client.get(body["response_url"])).json()
    picture = await fetch_image(client, output["images"][0]["url"])
    assert picture.size == (40, 30)
    assert picture.convert("RGB").getpixel((20, 15))[1] > 150  # still green at strength 0.01


async def test_image_to_image_download_and_decode_failures(client: httpx2.AsyncClient) -> None:
    unreachable = await client.post(
        "/run/fal-ai/flux/dev/image-to-image", json={"image_url": "http://127.0.0.1:9/none.png", "prompt": "p"}
    )
    assert unreachable.status_code == 422
    detail = unreachable.json()["detail"][0]
    assert (detail["type"], detail["loc"]) == ("file_download_error", ["body", "image_url"])
    not_image = await client.post(
        "/run/fal-ai/flux/dev/image-to-image",
        json={"image_url": "data:text/plain;base64," + base64.b64encode(b"hello").decode(), "prompt": "p"},
    )
    assert not_image.status_code == 422 and not_image.json()["detail"][0]["type"] == "image_load_error"


async def test_llm_is_deterministic_and_reports_usage(client: httpx2.AsyncClient) -> None:
    ask = {"prompt": "Why is the sky blue?", "model": "google/gemini-2.5-flash"}
    first = await run(client, "openrouter/router", ask)
    second = await run(client, "openrouter/router", ask)
    other = await run(client, "openrouter/router", {**ask, "model": "openai/gpt-4.1"})
    assert first == second and first["output"] != other["output"]
    assert first["output"].startswith('You asked: "Why is the sky blue?".')
    assert (first["partial"], first["error"], first["reasoning"]) == (False, None, None)
    usage = first["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0 and usage["cost"] > 0
    short = await run(client, "openrouter/router", {**ask, "max_tokens": 3, "system_prompt": None})
    assert len(short["output"].split()) == 3


async def test_fast_lcm_diffusion_is_quick_and_small(client: httpx2.AsyncClient) -> None:
    output = await run(client, "fal-ai/fast-lcm-diffusion", {"prompt": "a frame", "seed": 1})
    assert output["images"][0]["url"].startswith("data:image/jpeg;base64,")  # fal's default: sync_mode true
    picture = await fetch_image(client, output["images"][0]["url"])
    assert picture.size == (1024, 1024) and output["timings"]["inference"] < 1  # square_hd
    assert default_registry().get("fal-ai/fast-lcm-diffusion").supports_realtime  # type: ignore[union-attr]
    steps = await client.post("/run/fal-ai/fast-lcm-diffusion", json={"prompt": "p", "num_inference_steps": 33})
    assert steps.json()["detail"][0]["ctx"] == {"le": 32}


async def test_slow_fails_with_the_requested_error_type(client: httpx2.AsyncClient) -> None:
    for error_type, code in (("request_timeout", 504), ("runner_incomplete_response", 502), ("bad_request", 400)):
        response = await client.post("/run/emulator/slow", json={"seconds": 0, "fail": True, "fail_with": error_type})
        assert (response.status_code, response.json()["error_type"]) == (code, error_type)
    ignored = await client.post("/run/emulator/slow", json={"seconds": 0, "fail_with": "bad_request"})
    assert ignored.status_code == 200  # fail_with only picks the error of a failing run


async def test_strict_reports_every_rule(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/run/emulator/strict",
        json={"num_images": 0, "style": "oil", "width": 100, "height": 5000, "tags": ["a"] * 6},
    )
    detail = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body", "prompt"], "missing"),
        (["body", "num_images"], "greater_than_equal"),
        (["body", "style"], "one_of"),
        (["body", "height"], "less_than_equal"),
        (["body", "tags"], "sequence_too_long"),
        (["body", "width"], "image_too_small"),
    ]
    assert detail[-1]["ctx"] == {"min_height": 256, "min_width": 256}
    assert all(d["url"] == f"https://docs.fal.ai/errors/#{d['type']}" for d in detail)
    long = await client.post("/run/emulator/strict", json={"prompt": "z" * 201})
    assert long.json()["detail"][0] == {
        "loc": ["body", "prompt"],
        "msg": "String should have at most 200 characters",
        "type": "string_too_long",
        "url": "https://docs.fal.ai/errors/#string_too_long",
        "ctx": {"max_length": 200},
        "input": "z" * 201,
    }


def test_models_of_real_endpoints_speak_fals_documents() -> None:
    registry = default_registry()
    assert registry.get("fal-ai/flux/dev/image-to-image").info.endpoint_id == "fal-ai/flux/dev/image-to-image"  # type: ignore[union-attr]
    assert registry.get("fal-ai/flux/dev").info.endpoint_id == "fal-ai/flux/dev"  # type: ignore[union-attr]
    assert registry.get("fal-ai/flux/schnell") is None
    assert {m.info.endpoint_id for m in registry.by_app("fal-ai/flux")} == {
        "fal-ai/flux/dev",
        "fal-ai/flux/dev/image-to-image",
    }
    real = {entry["endpoint_id"] for entry in openapi_index()}
    for model in registry.all():
        info = model.info
        assert "emulated" in info.tags and "runs-offline" in info.tags and info.unit, info.endpoint_id
        assert info.unit_price is not None and info.unit_price >= 0, info.endpoint_id
        if info.endpoint_id.startswith("emulator/"):
            continue  # the emulator's own test models
        assert info.endpoint_id in real, info.endpoint_id
        document = openapi_doc(info.endpoint_id)
        schemas = document["components"]["schemas"]
        assert model.components == schemas, info.endpoint_id
        submit_ref = document["paths"][f"/{info.endpoint_id}"]["post"]["requestBody"]["content"]
        assert model.input_schema == schemas[submit_ref["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]


def test_the_emulators_own_models_are_fal_shaped() -> None:
    for model in default_registry().all():
        if not model.info.endpoint_id.startswith("emulator/"):
            continue
        for schema in (model.input_schema, model.output_schema):
            jsonschema.Draft7Validator.check_schema(schema)
            assert schema["title"] and schema["type"] == "object"
            refs = {p["$ref"] for p in _walk(schema) if "$ref" in p}
            assert refs <= {f"#/components/schemas/{name}" for name in model.components}, model.info.endpoint_id
        order = model.input_schema["x-fal-order-properties"]
        assert sorted(order) == sorted(model.input_schema["properties"]), model.info.endpoint_id


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(child for value in node.values() for child in _walk(value))]
    if isinstance(node, list):
        return [child for value in node for child in _walk(value)]
    return []


async def test_image_to_image_reads_input_files_spilled_to_disk(make_emulator: MakeEmulator) -> None:
    """A large input file lives on disk; the model reads it (off the event loop) like any other."""
    server = make_emulator()
    server.state.files.spill_bytes = 0
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 20, 20)).save(buffer, format="PNG")
    url = server.base_url + server.state.files.put(buffer.getvalue(), "image/png", "red.png")
    stored = server.state.files.get(url)
    assert stored is not None and stored.blob.data is None and stored.blob.disk_path is not None
    async with client_for(server) as http:
        output = await run(http, "fal-ai/flux/dev/image-to-image", {"image_url": url, "prompt": "p", "strength": 0.01})
        picture = await fetch_image(http, output["images"][0]["url"])
    assert picture.size == (48, 32)
    assert picture.convert("RGB").getpixel((24, 16))[0] > 150  # still red at strength 0.01
