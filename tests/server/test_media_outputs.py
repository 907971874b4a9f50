"""Every modality's output through the MCP server: links, saved files of the right type, a video poster,
and a clear refusal for a listed model that cannot run offline."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path
from typing import Any

import av
import pytest
from mcp import Client
from mcp.types import ImageContent, ResourceLink
from PIL import Image

from fal_mcp.emulator.server import EmulatorServer
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio


async def test_video_is_saved_playable_linked_and_previewed(server: Any, workdir: Path) -> None:
    args = {"endpoint_id": "fal-ai/veo3", "input": {"prompt": "a fox in snow", "duration": "4s", "seed": 5}}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {**args, "download_dir": "media"})
    assert not result.is_error, text_of(result)
    (file,) = structured(result)["files"]
    assert file["content_type"] == "video/mp4"
    saved = Path(file["saved_path"])
    assert saved.parent == workdir / "media" and saved.suffix == ".mp4"
    with av.open(str(saved)) as container:
        assert container.streams.video[0].codec_context.name == "h264" and container.streams.audio
        assert sum(1 for _ in container.decode(video=0)) == 96
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    assert any(link.mime_type == "video/mp4" for link in links)
    (poster,) = [block for block in result.content if isinstance(block, ImageContent)]
    picture = Image.open(io.BytesIO(base64.b64decode(poster.data)))
    assert picture.format == "JPEG" and picture.width > picture.height  # a 16:9 frame
    assert "video/mp4" in text_of(result)


async def test_speech_saved_as_wav_then_transcribed_with_chunks(server: Any, workdir: Path) -> None:
    text = "Offline speech goes in and the same words come back out"
    async with Client(server) as client:
        spoken = await call(
            client,
            "fal_subscribe",
            {"endpoint_id": "fal-ai/kokoro/american-english", "input": {"prompt": text}, "download_dir": "audio"},
        )
        assert not spoken.is_error, text_of(spoken)
        (audio,) = structured(spoken)["files"]
        assert audio["content_type"] == "audio/wav" and audio["saved_path"].endswith(".wav")
        with wave.open(audio["saved_path"]) as saved:
            assert saved.getnframes() > saved.getframerate()  # more than a second of sound
        heard = await call(
            client, "fal_subscribe", {"endpoint_id": "fal-ai/wizper", "input": {"audio_url": audio["url"]}}
        )
    assert not heard.is_error, text_of(heard)
    output = structured(heard)["output"]
    assert output["text"] == text and output["chunks"][0]["text"] == text


async def test_image_edit_takes_local_files_in_image_urls(server: Any, workdir: Path) -> None:
    for name, colour in (("a.png", (250, 0, 0)), ("b.png", (0, 0, 250))):
        Image.new("RGB", (40, 30), colour).save(workdir / name)
    data = {"prompt": "side by side", "image_urls": ["a.png", "b.png"], "seed": 2}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/nano-banana/edit", "input": data})
    assert not result.is_error, text_of(result)
    out = structured(result)
    (image,) = out["output"]["images"]
    assert (image["width"], image["height"]) == (40, 30)
    assert any(isinstance(block, ImageContent) for block in result.content)


async def test_a_model_that_cannot_run_offline_is_refused_clearly_and_costs_nothing(
    server: Any, emulator: EmulatorServer
) -> None:
    before = sum(emulator.state.submissions.values())
    async with Client(server) as client:
        schema = structured(await call(client, "model_schema", {"endpoint_id": "fal-ai/flux/schnell"}))
        assert schema["name"] == "FLUX.1 [schnell] [not runnable offline]"
        assert schema["input"]  # fal's real schema is still there to read
        found = structured(await call(client, "model_search", {"query": "schnell"}))
        (listed,) = [m for m in found["models"] if m["endpoint_id"] == "fal-ai/flux/schnell"]
        assert listed["name"].endswith("[not runnable offline]")
        assert listed["description"].startswith("[Not runnable in the offline emulator")
        runnable = structured(await call(client, "model_schema", {"endpoint_id": "fal-ai/veo3"}))
        assert "not runnable" not in runnable["name"]
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}})
    error = error_of(result)
    assert error["kind"] == "not_found"
    assert "not runnable in the offline emulator" in text_of(result)
    assert "fal-ai/flux/dev" in text_of(result)  # says what does run
    assert sum(emulator.state.submissions.values()) == before
