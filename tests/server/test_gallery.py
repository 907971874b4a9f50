"""The download_dir gallery: what a real headless Chromium renders from disk, and what it never overwrites."""

from __future__ import annotations

import io
import json
import os
import wave
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from mcp import Client

from fal_mcp.guards import FilePolicy, open_output_dir
from fal_mcp.server import gallery
from fal_mcp.server.outputs import JobOutput, OutputFile
from fal_mcp.server.saving import JobFacts
from tests.browser import open_page
from tests.server.helpers import call, structured, text_of
from tests.server.test_saving import HOSTILE_PROMPT

pytestmark = pytest.mark.anyio

PAGE_STATE = """(() => ({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth,
                                           shown: i.getBoundingClientRect().width})),
  scripts: document.scripts.length,
  handlers: [...document.querySelectorAll('*')]
    .filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  prompts: [...document.querySelectorAll('.prompt')].map(p => p.textContent),
  models: [...document.querySelectorAll('h2')].map(h => h.textContent),
  audio: [...document.querySelectorAll('audio')].map(a => ({ready: a.readyState, duration: a.duration})),
}))()"""


FLUX = {"endpoint_id": "fal-ai/flux/dev"}


def _wav(path: Path, seconds: float = 0.5, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x10" * int(seconds * rate))


def _add_audio_job(directory: Path) -> None:
    """A text-to-speech job's gallery entry (the emulator has no audio model yet): a real WAV beside the images."""
    _wav(directory / "tts-0.wav")
    job = JobOutput(status="COMPLETED", endpoint_id="fal-ai/tts/demo", request_id="req-audio")
    job.files = [OutputFile(url="https://v3.fal.media/files/x/speech.wav", content_type="audio/wav")]
    job.files[0].saved_path = str(directory / "tts-0.wav")
    facts = JobFacts("fal-ai/tts/demo", "req-audio", "say hi", None, 0.002, datetime.now(UTC))
    with open_output_dir(FilePolicy(roots=(directory,)), str(directory), directory) as out:
        gallery.add_job(out, gallery.entry_for(job, facts))


async def test_gallery_renders_every_image_in_chromium(server, workdir: Path, tmp_path: Path, mode: str) -> None:
    out = workdir / "gallery"
    async with Client(server, mode=mode) as client:
        png = {"prompt": HOSTILE_PROMPT, "seed": 1, "num_images": 2, "output_format": "png"}
        first = await call(client, "fal_subscribe", {**FLUX, "input": png, "download_dir": "gallery"})
        jpeg = {"prompt": "a quiet harbour at dawn", "seed": 2}
        second = await call(client, "fal_subscribe", {**FLUX, "input": jpeg, "download_dir": "gallery"})
    assert not first.is_error and not second.is_error, text_of(first) + text_of(second)
    _add_audio_job(out)
    manifest = json.loads((out / "fal-gallery.json").read_text())
    assert [j["request_id"] for j in manifest["jobs"]] == [
        "req-audio",
        structured(second)["request_id"],
        structured(first)["request_id"],
    ]
    assert manifest["jobs"][2]["prompt"] == HOSTILE_PROMPT and manifest["jobs"][2]["seed"] == 1
    assert manifest["jobs"][2]["cost_estimate_usd"] == structured(first)["cost_estimate_usd"]

    def look() -> dict:
        with open_page((out / "index.html").as_uri()) as page:
            page.wait_for("[...document.images].every(i => i.complete)")
            page.wait_for("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
            state = page.evaluate(PAGE_STATE)
            state["requests"] = page.requested_urls()
            page.screenshot(tmp_path / "gallery.png")
        return state

    state = await anyio.to_thread.run_sync(look)
    _check_page(state, out, tmp_path / "gallery.png")


def _check_page(state: dict, out: Path, screenshot: Path) -> None:
    if os.environ.get("FAL_MCP_KEEP_SCREENSHOT"):  # to look at it yourself
        Path(os.environ["FAL_MCP_KEEP_SCREENSHOT"]).write_bytes(screenshot.read_bytes())
    assert len(state["images"]) == 3
    for image in state["images"]:
        assert image["complete"] and image["width"] > 0 and image["shown"] > 0, image
    assert state["scripts"] == 0 and state["handlers"] == 0, "the hostile prompt stayed text"
    assert HOSTILE_PROMPT in state["prompts"] and "say hi" in state["prompts"]
    assert state["models"] == ["fal-ai/tts/demo", "fal-ai/flux/dev", "fal-ai/flux/dev"]
    [audio] = state["audio"]
    assert audio["ready"] >= 1 and abs(audio["duration"] - 0.5) < 0.05
    # Chromium's own media controls load data: icons; everything else is a file beside the page.
    loaded = [url for url in state["requests"] if not url.startswith("data:")]
    assert len(loaded) == 5 and all(url.startswith(out.as_uri()) for url in loaded), state["requests"]
    assert screenshot.stat().st_size > 10_000


async def test_a_foreign_index_or_manifest_is_never_overwritten(server, workdir: Path) -> None:
    for name, text in (("index.html", "<h1>my own page</h1>"), ("fal-gallery.json", '{"mine": true}')):
        folder = workdir / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text(text)
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "p"}, "download_dir": folder.name}
        async with Client(server) as client:
            result = await call(client, "fal_subscribe", args)
        assert not result.is_error, text_of(result)
        assert not any(b.uri.endswith("index.html") for b in result.content if b.type == "resource_link")
        _check_untouched(folder, name, text, structured(result))


def _check_untouched(folder: Path, name: str, text: str, job: dict) -> None:
    assert (folder / name).read_text() == text
    [f] = job["files"]
    assert Path(f["saved_path"]).exists(), "the files are saved all the same"
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, Path(f["saved_path"]).name])


async def test_concurrent_jobs_all_land_in_the_gallery(server, workdir: Path) -> None:
    request_ids: list[str] = []

    async with Client(server) as client:

        async def run(prompt: str) -> None:
            args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": prompt}, "download_dir": "shared"}
            request_ids.append(structured(await call(client, "fal_subscribe", args))["request_id"])

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(run, f"prompt {n}")
    _check_all_listed(workdir / "shared", request_ids)


def _check_all_listed(folder: Path, request_ids: list[str]) -> None:
    manifest = json.loads((folder / "fal-gallery.json").read_text())
    assert sorted(j["request_id"] for j in manifest["jobs"]) == sorted(request_ids)
    page = (folder / "index.html").read_text()
    assert all(rid in page for rid in request_ids)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no staging files left"


async def test_a_symlink_in_place_of_the_page_is_neither_followed_nor_replaced(server, workdir: Path) -> None:
    (workdir / "links").mkdir()
    target = workdir / "elsewhere.html"
    target.write_text("<p>not yours</p>")
    (workdir / "links" / "index.html").symlink_to(target)
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "p"}, "download_dir": "links"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
    assert not result.is_error, text_of(result)
    _check_link_kept(workdir / "links" / "index.html", target)


def _check_link_kept(link: Path, target: Path) -> None:
    assert link.is_symlink() and target.read_text() == "<p>not yours</p>"
    assert not (link.parent / "fal-gallery.json").exists()


def test_an_edited_manifest_cannot_smuggle_links_or_markup(tmp_path: Path) -> None:
    job = {"request_id": "r1", "endpoint_id": "fal-ai/x", "saved_at": "2026-01-01T00:00:00+00:00", "prompt": "<b>hi"}
    files = [
        {"name": "../../etc/passwd", "kind": "image"},
        {"name": ".hidden.png", "kind": "image"},
        {"name": 'a" onerror="alert(1).png', "kind": "image", "url": "javascript:alert(1)"},
        {"name": "ok #1?.png", "kind": "image", "url": "https://v3.fal.media/files/ok.png"},
    ]
    raw = {"generator": "fal-mcp gallery", "version": 1, "jobs": [{**job, "files": files[2:]}, {**job, "files": files}]}
    (tmp_path / "fal-gallery.json").write_text(json.dumps(raw))
    with open_output_dir(FilePolicy(roots=(tmp_path,)), str(tmp_path), tmp_path) as out:
        manifest = gallery._read_manifest(out)
    assert len(manifest.jobs) == 1, "a record with a path for a name is dropped whole"
    page = gallery.render(manifest)
    assert "javascript:" not in page and 'onerror="' not in page and "<b>hi" not in page
    assert 'src="ok%20%231%3F.png"' in page and 'src="a%22%20onerror%3D%22alert%281%29.png"' in page


def test_provenance_and_size_never_decode_a_huge_image(tmp_path: Path) -> None:
    """A PNG claiming 60000x60000 pixels (3.6 gigapixels) gets its metadata without a single pixel decoded."""
    import struct
    import zlib

    from fal_mcp.server.provenance import Provenance, sniff, write_provenance
    from fal_mcp.server.saving import _image_size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    with (tmp_path / "huge.png").open("wb") as out:
        assert write_provenance(io.BytesIO(huge), out, sniff(huge), Provenance("a/b", "r", "2026-01-01T00:00:00Z"))
    with open_output_dir(FilePolicy(roots=(tmp_path,)), str(tmp_path), tmp_path) as out:
        assert _image_size(out, "huge.png") == (None, None)  # refused as a bomb by its header, not decoded
    assert (tmp_path / "huge.png").stat().st_size < 500


def test_the_manifest_keeps_one_record_per_job_and_at_most_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery, "MAX_JOBS", 20)  # 500 in use; a smaller page keeps the test fast

    def job(n: int, prompt: str = "p") -> gallery.GalleryJob:
        file = gallery.GalleryFile(name=f"f{n}.png", kind="image")
        return gallery.GalleryJob(request_id=f"r{n}", endpoint_id="a/b", saved_at="t", prompt=prompt, files=[file])

    with open_output_dir(FilePolicy(roots=(tmp_path,)), str(tmp_path), tmp_path) as out:
        for n in range(gallery.MAX_JOBS + 2):
            gallery.add_job(out, job(n))
        gallery.add_job(out, job(10, prompt="saved again"))
        manifest = gallery._read_manifest(out)
    ids = [j.request_id for j in manifest.jobs]
    assert len(ids) == gallery.MAX_JOBS == len(set(ids))
    assert ids[0] == "r10" and manifest.jobs[0].prompt == "saved again" and ids[1] == f"r{gallery.MAX_JOBS + 1}"
    assert "r0" not in ids and "r1" not in ids
