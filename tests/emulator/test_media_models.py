"""The offline models of every modality over real HTTP: fal's real inputs in, real files of the right type out."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import av
import httpx2
import jsonschema
import pytest
from PIL import Image

from fal_mcp.emulator.catalog import catalog
from fal_mcp.emulator.models import default_registry
from fal_mcp.emulator.models.base import DocumentModel
from fal_mcp.emulator.run import GatewayError, resolve
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.emulator.state import EmulatorState
from tests.realdata import openapi_doc

pytestmark = pytest.mark.anyio


async def run(http: httpx2.AsyncClient, endpoint_id: str, data: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/run/{endpoint_id}", json=data)
    assert response.status_code == 200, response.text
    return response.json()


def output_schema_validator(endpoint_id: str) -> jsonschema.Draft7Validator:
    """fal's own output schema for the endpoint (from the real document), refs resolved in the document."""
    document = openapi_doc(endpoint_id)
    result = document["paths"][f"/{endpoint_id}/requests/{{request_id}}"]["get"]["responses"]["200"]
    return jsonschema.Draft7Validator({**result["content"]["application/json"]["schema"], **document})


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_every_model_of_a_real_endpoint_returns_fals_output_shape(client: httpx2.AsyncClient) -> None:
    """One call per runnable real endpoint, checked against the output schema of fal's own document."""
    calls = {
        "fal-ai/flux/dev": {"prompt": "a fox", "image_size": {"width": 64, "height": 64}, "seed": None},
        "fal-ai/flux/dev/image-to-image": {"prompt": "a fox", "image_url": png((1, 2, 3)), "strength": 0.5},
        "fal-ai/nano-banana/edit": {"prompt": "merge them", "image_urls": [png((9, 9, 9))], "seed": None},
        "fal-ai/veo3": {"prompt": "a fox runs", "duration": "4s", "generate_audio": False, "negative_prompt": None},
        "fal-ai/kokoro/american-english": {"prompt": "Hello there."},
        "openrouter/router": {"prompt": "hi", "model": "google/gemini-2.5-flash", "system_prompt": None},
        "fal-ai/fast-lcm-diffusion": {"prompt": "a fox", "image_size": "square"},
    }
    models = [m for m in default_registry().all() if isinstance(m, DocumentModel)]
    assert {m.endpoint_id for m in models} == set(calls) | {"fal-ai/wizper"}
    for endpoint_id, data in calls.items():
        output = await run(client, endpoint_id, data)
        errors = [e.message for e in output_schema_validator(endpoint_id).iter_errors(output)]
        assert not errors, (endpoint_id, errors)


async def test_video_is_a_playable_h264_mp4_with_audio(client: httpx2.AsyncClient) -> None:
    output = await run(client, "fal-ai/veo3", {"prompt": "a red fox runs through snow", "duration": "4s", "seed": 3})
    video = output["video"]
    assert video["content_type"] == "video/mp4" and video["file_name"].endswith(".mp4")
    data = (await client.get(video["url"])).content
    assert len(data) == video["file_size"]
    with av.open(io.BytesIO(data)) as container:
        (picture,) = container.streams.video
        (sound,) = container.streams.audio
        assert (picture.codec_context.name, picture.width, picture.height) == ("h264", 1280, 720)
        assert sound.codec_context.name == "aac"
        assert 3.9 < container.duration / 1_000_000 < 4.2
        decoded = [frame.to_image() for frame in container.decode(video=0)]
    assert len(decoded) == 96  # 4 s at 24 fps, every frame decodes
    assert decoded[0].tobytes() != decoded[-1].tobytes()  # it moves
    again = await run(client, "fal-ai/veo3", {"prompt": "a red fox runs through snow", "duration": "4s", "seed": 3})
    assert (await client.get(again["video"]["url"])).content == data  # deterministic per (prompt, seed)


async def test_video_options_and_fals_enums(client: httpx2.AsyncClient) -> None:
    silent = await run(
        client, "fal-ai/veo3", {"prompt": "tall", "duration": "4s", "aspect_ratio": "9:16", "generate_audio": False}
    )
    with av.open(io.BytesIO((await client.get(silent["video"]["url"])).content)) as container:
        assert not container.streams.audio
        assert (container.streams.video[0].width, container.streams.video[0].height) == (720, 1280)
    wrong = await client.post("/run/fal-ai/veo3", json={"prompt": "x", "duration": "8"})
    assert wrong.status_code == 422
    (detail,) = wrong.json()["detail"]
    assert (detail["type"], detail["loc"], detail["ctx"]) == (
        "one_of",
        ["body", "duration"],
        {"expected": ["4s", "6s", "8s"]},
    )


async def test_image_edit_takes_image_urls(client: httpx2.AsyncClient) -> None:
    red, blue = png((250, 0, 0)), png((0, 0, 250))
    output = await run(
        client, "fal-ai/nano-banana/edit", {"prompt": "put them side by side", "image_urls": [red, blue], "seed": 1}
    )
    (image,) = output["images"]
    assert (image["width"], image["height"], image["content_type"]) == (64, 48, "image/png")  # aspect "auto"
    picture = Image.open(io.BytesIO((await client.get(image["url"])).content)).convert("RGB")
    left, right = picture.getpixel((5, 24)), picture.getpixel((58, 24))
    assert left[0] > left[2] and right[2] > right[0]  # the first input on the left, the second on the right
    assert output["description"]
    wide = await run(
        client,
        "fal-ai/nano-banana/edit",
        {"prompt": "wide", "image_urls": [red], "aspect_ratio": "16:9", "output_format": "webp", "num_images": 2},
    )
    assert [(i["width"], i["height"], i["content_type"]) for i in wide["images"]] == [(1024, 576, "image/webp")] * 2
    singular = await client.post("/run/fal-ai/nano-banana/edit", json={"prompt": "edit it", "image_url": red})
    assert singular.status_code == 422
    assert [d["loc"] for d in singular.json()["detail"]] == [["body", "image_urls"]]


async def test_speech_round_trip_tts_wav_then_stt_text_with_chunks(client: httpx2.AsyncClient) -> None:
    text = "The quick brown fox jumps over the lazy dog and keeps on running far away"
    spoken = await run(client, "fal-ai/kokoro/american-english", {"prompt": text, "voice": "am_adam"})
    audio = spoken["audio"]
    assert audio["content_type"] == "audio/wav" and audio["file_name"].endswith(".wav")
    data = (await client.get(audio["url"])).content
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 24_000, 2)
        seconds = wav.getnframes() / wav.getframerate()
    assert 3 < seconds < 10
    fast = await run(client, "fal-ai/kokoro/american-english", {"prompt": text, "speed": 2})
    with wave.open(io.BytesIO((await client.get(fast["audio"]["url"])).content)) as wav:
        assert wav.getnframes() / wav.getframerate() < seconds * 0.6

    heard = await run(client, "fal-ai/wizper", {"audio_url": audio["url"]})
    assert heard["text"] == text and heard["languages"] == ["en"]
    assert [chunk["text"] for chunk in heard["chunks"]] == [text]  # merged: the whole clip is under 29 s
    assert heard["chunks"][0]["timestamp"][0] == 0 and abs(heard["chunks"][-1]["timestamp"][1] - seconds) < 0.05
    split = await run(client, "fal-ai/wizper", {"audio_url": audio["url"], "merge_chunks": False})
    assert len(split["chunks"]) == 2 and " ".join(c["text"] for c in split["chunks"]) == text
    starts_and_ends = [t for chunk in split["chunks"] for t in chunk["timestamp"]]
    assert starts_and_ends == sorted(starts_and_ends)


async def test_stt_reads_other_formats_and_refuses_what_is_not_audio(client: httpx2.AsyncClient) -> None:
    video = await run(client, "fal-ai/veo3", {"prompt": "music", "duration": "4s", "seed": 9})
    heard = await run(client, "fal-ai/wizper", {"audio_url": video["video"]["url"], "language": None})
    assert heard["text"] and heard["chunks"] and 3.9 < heard["chunks"][-1]["timestamp"][1] < 4.2
    constant = await client.post("/run/fal-ai/wizper", json={"audio_url": "x", "chunk_level": "word"})
    assert constant.status_code == 422 and constant.json()["detail"][0]["type"] == "literal_error"
    not_audio = await client.post("/run/fal-ai/wizper", json={"audio_url": png((0, 0, 0))})
    assert not_audio.status_code == 422 and not_audio.json()["detail"][0]["type"] == "audio_load_error"


async def test_without_pyav_the_video_model_is_listed_as_not_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fal_mcp.emulator.models.veo3.have_pyav", lambda: False)
    state = EmulatorState()
    veo3 = next(entry for entry in catalog(state) if entry.info.endpoint_id == "fal-ai/veo3")
    assert not veo3.runnable and "catalog-only" in veo3.info.tags
    with pytest.raises(GatewayError) as refused:
        resolve(state, "fal-ai/veo3")
    assert b"pip install 'fal-mcp[media]'" in refused.value.response.body


async def test_null_passes_only_where_fal_accepts_it(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    """fal accepts null for an optional field without a default (pydantic's ``= None``), even where the
    document types it without null; not for a field with a real default or a required one."""
    ok = await run(client, "fal-ai/flux/dev", {"prompt": "p", "seed": None, "image_size": {"width": 32, "height": 32}})
    assert isinstance(ok["seed"], int)
    refused = await client.post("/run/fal-ai/flux/dev", json={"prompt": None, "num_images": None})
    assert refused.status_code == 422
    assert {tuple(d["loc"]) for d in refused.json()["detail"]} == {("body", "prompt"), ("body", "num_images")}
