"""Saved outputs people can find: predictable names with true extensions, provenance inside, file:// links.

Driven through the MCP in-memory client against the emulator (both protocol eras); the format-level
pieces (sniffing, PNG/JPEG/WebP metadata) are checked directly on real files Pillow makes.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from mcp import Client
from PIL import Image

from fal_mcp.config import ConfigError, Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.naming import DEFAULT_TEMPLATE, NameTemplate, TemplateError
from fal_mcp.server.provenance import Provenance, sniff, write_provenance
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio

HOSTILE_PROMPT = 'a "cat" </p><script>alert(1)</script> & <img src=x onerror=alert(2)> 🐱 — ünïcode'


def submissions(emulator: EmulatorServer) -> int:
    return sum(emulator.state.submissions.values())


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return image.mode, image.size, image.tobytes()


async def test_saved_files_are_named_typed_and_carry_provenance(server, workdir: Path, mode: str) -> None:
    args = {
        "endpoint_id": "fal-ai/flux/dev",
        "input": {"prompt": HOSTILE_PROMPT, "seed": 42, "num_images": 2, "output_format": "png"},
        "download_dir": "out",
    }
    async with Client(server, mode=mode) as client:
        result = await call(client, "fal_subscribe", args)
    assert not result.is_error, text_of(result)
    job = structured(result)
    request_id = job["request_id"]
    expected = [f"fal-ai_flux_dev-{request_id}-{i}.png" for i in range(2)]
    assert [Path(f["saved_path"]).name for f in job["files"]] == expected
    assert sorted(p.name for p in (workdir / "out").iterdir()) == sorted([*expected, "fal-gallery.json", "index.html"])

    links = {block.uri: block for block in result.content if block.type == "resource_link"}
    for f in job["files"]:
        _check_png(f, links, request_id)
    gallery = workdir / "out" / "index.html"
    assert gallery.as_uri() in links and job["gallery"] == str(gallery)
    assert f"Gallery of saved jobs: {gallery}" in text_of(result)


def _check_png(f: dict, links: dict, request_id: str) -> None:
    saved = Path(f["saved_path"])
    assert f["url"] in links, "the CDN link stays"
    file_link = links[saved.as_uri()]  # a file:// link per saved file besides it
    assert file_link.mime_type == "image/png" and file_link.size == saved.stat().st_size == f["size"]
    original = httpx.get(f["url"]).content
    data = saved.read_bytes()
    assert data != original and pixels(data) == pixels(original), "metadata added, pixels untouched"
    with Image.open(saved) as image:
        text = dict(image.text)
    assert text["Description"] == HOSTILE_PROMPT
    assert text["fal:endpoint"] == "fal-ai/flux/dev" and text["fal:request_id"] == request_id
    assert text["fal:seed"] == "42" and text["Software"].startswith("fal-mcp")
    assert datetime.fromisoformat(text["Creation Time"]).tzinfo is not None


async def test_jpeg_gets_xmp_without_reencoding(server, workdir: Path) -> None:
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x < y & z", "seed": 5}, "download_dir": "."}
    async with Client(server) as client:
        job = structured(await call(client, "fal_subscribe", args))
    _check_jpeg(job)


def _check_jpeg(job: dict) -> None:
    [f] = job["files"]
    saved = Path(f["saved_path"])
    assert saved.name == f"fal-ai_flux_dev-{job['request_id']}-0.jpg" and f["content_type"] == "image/jpeg"
    original = httpx.get(f["url"]).content
    data = saved.read_bytes()
    assert pixels(data) == pixels(original)
    assert data.replace(_app1_segment(data), b"") == original, "only one APP1 segment was added"
    with Image.open(saved) as image:
        xmp = image.info["xmp"].decode()
    assert "x &lt; y &amp; z" in xmp and job["request_id"] in xmp and 'fal:seed="5"' in xmp


def _app1_segment(data: bytes) -> bytes:
    start = data.index(b"\xff\xe1")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    return data[start : start + 2 + length]


async def test_per_call_template_and_queue_result_saving(server, workdir: Path, mode: str) -> None:
    async with Client(server, mode=mode) as client:
        data = {"prompt": "queued cat", "seed": 9, "output_format": "png"}
        submitted = structured(await call(client, "queue_submit", {"endpoint_id": "fal-ai/flux/dev", "input": data}))
        rid = submitted["request_id"]
        args = {"request_id": rid, "download_dir": "q", "file_name_template": "cat {seed} {date}_{index}"}
        first = await call(client, "queue_result", args)
        again = await call(client, "queue_result", args)
    assert not first.is_error, text_of(first)
    today = datetime.now(UTC).strftime("%Y%m%d")
    [saved] = [Path(f["saved_path"]) for f in structured(first)["files"]]
    assert saved.name == f"cat 9 {today}_0.png", "no {ext} in the template: the true one is appended"
    [second] = [Path(f["saved_path"]) for f in structured(again)["files"]]
    assert second.name == f"cat 9 {today}_0-1.png", "never overwritten"
    assert _png_text(saved)["Description"] == "queued cat" and _png_text(saved)["fal:request_id"] == rid


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        return dict(image.text)


@pytest.mark.parametrize(
    "template",
    ["../{index}.{ext}", "a/{index}", "{bogus}", "{index!r}", "{index:>5}", "{", "}", "", "{endpoint.__class__}"],
)
async def test_bad_templates_are_refused_before_paying(server, emulator: EmulatorServer, template: str) -> None:
    before = submissions(emulator)
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}, "file_name_template": template}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
    error = error_of(result)
    assert error["kind"] == "invalid_argument" and "file_name_template" in text_of(result)
    assert submissions(emulator) == before


async def test_setting_sets_the_default_and_bad_values_fail_at_start(settings: Settings, workdir: Path) -> None:
    with pytest.raises(ConfigError, match="FAL_MCP_FILE_NAME_TEMPLATE"):
        Settings.from_env({"FAL_MCP_FILE_NAME_TEMPLATE": "{nope}.{ext}"})
    configured = Settings.from_env({"FAL_MCP_FILE_NAME_TEMPLATE": "{seed}-{name}", "FAL_MCP_PROVENANCE": "0"})
    server = make_server(
        settings, file_name_template=configured.file_name_template, provenance=configured.provenance, gallery=False
    )
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "p", "seed": 3}, "download_dir": "d"}
    async with Client(server) as client:
        job = structured(await call(client, "fal_subscribe", args))
    _check_plain_copy(job, workdir / "d")


def _check_plain_copy(job: dict, folder: Path) -> None:
    [f] = job["files"]
    saved = Path(f["saved_path"])
    assert saved.name.startswith("3-") and saved.suffix == ".jpg"
    assert saved.read_bytes() == httpx.get(f["url"]).content, "provenance off: the file is fal's, byte for byte"
    assert sorted(p.name for p in folder.iterdir()) == [saved.name], "gallery off: nothing else written"


async def test_data_uri_output_gets_its_true_extension_and_a_file_link(server, workdir: Path) -> None:
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "inline", "sync_mode": True}, "download_dir": "s"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
    [f] = structured(result)["files"]
    assert f["url"].startswith("data:") and Path(f["saved_path"]).suffix == ".jpg"
    assert Path(f["saved_path"]).as_uri() in {b.uri for b in result.content if b.type == "resource_link"}


# --------------------------------------------------------------------------- names


def test_template_fields_are_sanitised() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    template = NameTemplate.parse("{endpoint}-{request_id}-{name}-{seed}-{date}T{time}-{index}.{ext}")
    name = template.render(
        endpoint="fal-ai/flux/dev",
        request_id="../../etc/passwd",
        index=3,
        ext="png",
        seed=None,
        name="..\\..\\evil<>:|?*\x00.sh",
        when=when,
    )
    assert name == "fal-ai_flux_dev-etc_passwd-evil-noseed-20260102T030405-3.png"
    assert "/" not in name and "\\" not in name
    assert NameTemplate.parse(DEFAULT_TEMPLATE).render(
        endpoint="a/b", request_id="r", index=0, ext="mp4", when=when
    ) == ("a_b-r-0.mp4")
    with pytest.raises(TemplateError, match="fields are"):
        NameTemplate.parse("{prompt}.{ext}")


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("head", "declared", "name", "ext"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image/jpeg", None, "png"),  # content beats the declared type
        (b"\xff\xd8\xff\xe0", "application/octet-stream", "x.bin", "jpg"),
        (b"RIFF\0\0\0\0WEBPVP8 ", None, None, "webp"),
        (b"RIFF\0\0\0\0WAVEfmt ", None, None, "wav"),
        (b"\0\0\0\x18ftypisom\0\0\0\0", None, None, "mp4"),
        (b"\0\0\0\x14ftypqt  ", None, None, "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm", None, None, "webm"),
        (b"ID3\x04\0", None, None, "mp3"),
        (b"\xff\xfb\x90\x64", None, None, "mp3"),
        (b"\xff\xf1\x50\x80", None, None, "aac"),
        (b"OggS\0", None, None, "ogg"),
        (b"fLaC", None, None, "flac"),
        (b"glTF\x02\0\0\0", None, None, "glb"),
        (b'{"a": 1}', "application/json", None, "json"),
        (b"plain", None, "notes.txt", "txt"),
        (b"????", None, None, "bin"),
    ],
)
def test_sniff(head: bytes, declared: str | None, name: str | None, ext: str) -> None:
    assert sniff(head, declared, name).ext == ext


PROVENANCE = Provenance(
    endpoint="fal-ai/flux/dev", request_id="req-1", created="2026-01-01T00:00:00+00:00", seed=7, prompt="p & <q>"
)


def _image(fmt: str, **save: object) -> bytes:
    image = Image.new("RGBA" if fmt == "WEBP" else "RGB", (33, 17))
    image.putdata([((x * 7) % 256, (x * 13) % 256, (x * 29) % 256, 200) for x in range(33 * 17)])
    if fmt == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("WEBP", {"lossless": True}),  # VP8L: becomes extended (VP8X) with an XMP chunk
        ("WEBP", {"quality": 80}),  # VP8 with alpha: already VP8X
        ("JPEG", {"quality": 90, "exif": Image.Exif()}),
        ("PNG", {}),
    ],
)
def test_provenance_keeps_pixels_in_every_format(fmt: str, save: dict) -> None:
    original = _image(fmt, **save)
    file_type = sniff(original)
    out = io.BytesIO()
    assert write_provenance(io.BytesIO(original), out, file_type, PROVENANCE)
    tagged = out.getvalue()
    assert pixels(tagged) == pixels(original)
    with Image.open(io.BytesIO(tagged)) as image:
        image.load()
        found = image.text.get("Description") if fmt == "PNG" else image.info["xmp"].decode()
    assert "p & <q>" in found if fmt == "PNG" else "p &amp; &lt;q&gt;" in found and "req-1" in found


def test_lossy_webp_without_alpha_gets_a_vp8x_header() -> None:
    image = Image.new("RGB", (40, 24), (200, 30, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=70)
    original = buffer.getvalue()
    assert original[12:16] == b"VP8 "
    out = io.BytesIO()
    assert write_provenance(io.BytesIO(original), out, sniff(original), PROVENANCE)
    with Image.open(io.BytesIO(out.getvalue())) as tagged:
        assert tagged.size == (40, 24) and b"req-1" in tagged.info["xmp"]
    assert pixels(out.getvalue()) == pixels(original)


def test_unhandled_or_broken_images_are_left_alone() -> None:
    out = io.BytesIO()
    assert not write_provenance(io.BytesIO(b"GIF89a..."), out, sniff(b"GIF89a"), PROVENANCE)
    assert not write_provenance(io.BytesIO(b"\x89PNG\r\n\x1a\nshort"), out, sniff(b"\x89PNG\r\n\x1a\n"), PROVENANCE)
    assert not write_provenance(io.BytesIO(b"\xff\xd8\xff"), out, sniff(b"\xff\xd8\xff"), PROVENANCE)
