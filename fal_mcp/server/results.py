"""Results an agent can use: structured output, a short summary, a link per file, small thumbnails.

fal's output stays whole in ``structuredContent`` (except huge inline data URIs, which are shortened);
``content`` carries a one-paragraph summary, a ``resource_link`` per output file and, for images and
videos (a poster frame), a thumbnail bounded in pixels and bytes so the agent sees what it made without
blowing its context.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent

from fal_mcp.log import get_logger
from fal_mcp.server.outputs import JobOutput, OutputFile, StreamOutput
from fal_mcp.server.posters import previewable, still_image
from fal_mcp.spend import format_usd

if TYPE_CHECKING:
    from fal_mcp.guards import FilePolicy
    from fal_mcp.naming import NameTemplate
    from fal_mcp.server.jobs import Call

log = get_logger(__name__)

MAX_FILES = 50
MAX_THUMBNAILS = 4
INLINE_DATA_LIMIT = 2048  # data URIs longer than this are shortened in structuredContent
THUMBNAIL_SOURCE_LIMIT = 40 * 1024 * 1024
# Decoding costs 1-8 bytes a pixel whatever the file's size (a 434 KiB PNG can hold 12000x12000), so images
# are measured from their header before any decode: above 4096x4096 (after JPEG draft scaling) no preview.
THUMBNAIL_MAX_DECODE_PIXELS = 4096 * 4096


def find_files(output: Any) -> list[OutputFile]:
    """Every fal File/Image object (``{"url": …}``) in an output, in order, without duplicates."""
    found: list[OutputFile] = []
    seen: set[str] = set()

    def walk(value: Any) -> None:
        if len(found) >= MAX_FILES:
            return
        if isinstance(value, dict):
            url = value.get("url")
            if isinstance(url, str) and url.startswith(("http://", "https://", "data:")) and url not in seen:
                seen.add(url)
                found.append(
                    OutputFile(
                        url=url,
                        content_type=value.get("content_type") or _guess_type(url),
                        file_name=value.get("file_name") or _name_from_url(url),
                        width=_int(value.get("width")),
                        height=_int(value.get("height")),
                        size=_int(value.get("file_size")),
                    )
                )
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(output)
    return found


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _guess_type(url: str) -> str | None:
    if url.startswith("data:"):
        return url[5:].split(";", 1)[0].split(",", 1)[0] or None
    return mimetypes.guess_type(urlsplit(url).path)[0]


def _name_from_url(url: str) -> str | None:
    if url.startswith("data:"):
        ext = mimetypes.guess_extension(_guess_type(url) or "") or ".bin"
        return f"output{ext}"
    return PurePosixPath(unquote(urlsplit(url).path)).name or None


def shorten_data_uris(value: Any, limit: int = INLINE_DATA_LIMIT) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > limit:
        head = value.split(",", 1)[0]
        return f"{head},…[{len(value)} characters omitted; see files / pass download_dir to save it]"
    if isinstance(value, dict):
        return {k: shorten_data_uris(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten_data_uris(v, limit) for v in value]
    return value


# Very large outputs (a long LLM answer, a huge JSON) would swamp the model's context and pass hosts' result
# limits: structuredContent keeps strings up to OUTPUT_STRING_LIMIT characters and lists up to
# OUTPUT_LIST_LIMIT items (tighter when many add up past OUTPUT_JSON_LIMIT), and the text summary repeats
# up to TEXT_OUTPUT_LIMIT characters of the output; what is cut is saved whole to a file both halves name.
OUTPUT_STRING_LIMIT = 50_000
OUTPUT_LIST_LIMIT = 500
OUTPUT_JSON_LIMIT = 80_000  # characters of the whole (cut) output
TEXT_OUTPUT_LIMIT = 8_000
ANSWER_FIELDS = ("output", "text", "answer", "content", "response")


def cap_strings(value: Any, limit: int = OUTPUT_STRING_LIMIT, items: int = OUTPUT_LIST_LIMIT) -> tuple[Any, int]:
    """``value`` with strings over ``limit`` characters and lists over ``items`` cut (marked); how much was cut."""
    cut = 0

    def walk(item: Any) -> Any:
        nonlocal cut
        if isinstance(item, str) and len(item) > limit:
            cut += len(item) - limit
            return item[:limit] + f"…[{len(item) - limit} more characters: see full_output]"
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            kept = [walk(v) for v in item[:items]]
            if len(item) > items:
                cut += len(item) - items
                kept.append(f"…[{len(item) - items} more items: see full_output]")
            return kept
        return item

    return walk(value), cut


def keep_full_output(call: Call, output: Any, name: str | None) -> str | None:
    """Save an output too large to return whole; the path, or ``None`` where no local file can help."""
    import json
    import uuid

    from fal_mcp.config import default_cache_dir

    base = call.state.settings.cache_dir or default_cache_dir()
    if base is None or call.state.per_user:  # a remote caller cannot open the server's files
        return None
    path = base / "outputs" / f"{name or uuid.uuid4().hex}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(output, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        log.warning("output.not_kept", error=type(exc).__name__)
        return None
    return str(path)


def cap_output(call: Call, output: Any, name: str | None) -> tuple[Any, str | None]:
    """(output fit to return, path of the whole output when it had to be cut).

    Many long strings can add up past the hosts' limits (Claude Code: 25k tokens), so the cut tightens
    until the whole output fits in OUTPUT_JSON_LIMIT characters.
    """
    import json

    for limit, items in ((OUTPUT_STRING_LIMIT, OUTPUT_LIST_LIMIT), (10_000, 100), (2_000, 20), (200, 5)):
        capped, cut = cap_strings(output, limit, items)
        if len(json.dumps(capped, ensure_ascii=False, default=str)) <= OUTPUT_JSON_LIMIT:
            break
    return (capped, keep_full_output(call, output, name)) if cut else (output, None)


def output_text(output: Any, limit: int = TEXT_OUTPUT_LIMIT) -> str:
    """fal's output as a text-only host should see it: an answer's text as is, the rest as compact JSON."""
    import json

    answer = None
    rest = output
    if isinstance(output, dict):
        key = next((k for k in ANSWER_FIELDS if isinstance(output.get(k), str)), None)
        if key is not None:
            answer = output[key]
            rest = {k: v for k, v in output.items() if k != key}
    parts = [answer] if answer else []
    if rest not in (None, {}, []):
        parts.append(json.dumps(rest, ensure_ascii=False, separators=(",", ":"), default=str))
    text = "\n".join(parts)
    if len(text) > limit:
        text = text[:limit] + f"…[{len(text) - limit} more characters in the structured result]"
    return text


def summary(job: JobOutput) -> str:
    parts = [f"{job.endpoint_id} {job.status.lower().replace('_', ' ')}"]
    if job.request_id:
        parts.append(f"(request {job.request_id})")
    if job.elapsed_seconds is not None:
        parts.append(f"in {job.elapsed_seconds:.1f}s")
    text = " ".join(parts) + "."
    if job.reattached:
        text += " Re-attached to an identical earlier job: no new charge."
    if job.cost_estimate_usd is not None:
        text += f" Estimated cost {format_usd(job.cost_estimate_usd)}."
    if job.spend:
        text += f" {job.spend}"
    if job.files:
        described = []
        for f in job.files[:10]:
            size = f" {f.width}x{f.height}" if f.width and f.height else ""
            where = f.saved_path or (f.url if not f.url.startswith("data:") else "inline data")
            described.append(f"{f.content_type or 'file'}{size}: {where}")
        text += f" {len(job.files)} file(s): " + "; ".join(described)
        if len(job.files) > 10:
            text += "; …"
        if job.gallery:
            text += f". Gallery of saved jobs: {job.gallery}"
    if job.output is not None and job.status == "COMPLETED":
        text += "\nOutput:\n" + output_text(job.output)
    if job.full_output:
        text += f"\nThe output was too large to return whole; all of it is in {job.full_output}"
    if job.next_step:
        text += "\nNext step: " + job.next_step
    return text


async def _read_bytes(call: Call, url: str, limit: int) -> bytes:
    """A file's bytes: inline data URIs decoded, URLs fetched through the URL guard (fal hosts allowed)."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        try:
            data = base64.b64decode(payload, validate=False) if ";base64" in header else unquote(payload).encode()
        except (binascii.Error, ValueError) as exc:
            raise ValueError("malformed data URI") from exc
        if len(data) > limit:
            raise ValueError("inline file too large")
        return data
    from dataclasses import replace

    from fal_mcp.server.netguard import fetch_bytes

    client, policy = await call.state.fetch_client()
    return await fetch_bytes(replace(policy, max_bytes=limit), client, url)


def _make_thumbnail(data: bytes, max_px: int, max_bytes: int) -> bytes | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: nothing decoded yet
            image.draft("RGB", (max_px, max_px))  # JPEG decodes at 1/2..1/8 scale; size now says so
            width, height = image.size
            if width * height > THUMBNAIL_MAX_DECODE_PIXELS:  # an image bomb, or just too big to preview
                log.info("thumbnail.too_many_pixels", width=width, height=height)
                return None
            image.thumbnail((max_px, max_px))
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    for quality in (85, 70, 55, 40, 25):
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        if quality == 40:
            rgb.thumbnail((max(16, rgb.width // 2), max(16, rgb.height // 2)))
    return None


async def thumbnails(call: Call, files: list[OutputFile]) -> list[ImageContent]:
    settings = call.state.settings
    blocks: list[ImageContent] = []
    for f in [f for f in files if previewable(f.content_type)][:MAX_THUMBNAILS]:
        try:
            async with call.state.thumbnail_slots:
                with anyio.fail_after(20):
                    data = await _read_bytes(call, f.url, THUMBNAIL_SOURCE_LIMIT)
                data = await anyio.to_thread.run_sync(still_image, data, f.content_type)  # a video's poster frame
                thumb = await anyio.to_thread.run_sync(
                    _make_thumbnail, data, settings.thumbnail_max_px, settings.thumbnail_max_bytes
                )
                del data
        except Exception as exc:  # a missing preview never fails the job
            log.info("thumbnail.skipped", url_kind=f.url[:5], error=type(exc).__name__)
            continue
        if thumb is not None:
            blocks.append(ImageContent(type="image", data=base64.b64encode(thumb).decode(), mime_type="image/jpeg"))
    return blocks


def output_policy(call: Call, roots: tuple[Path, ...]) -> FilePolicy:
    from fal_mcp.guards import FilePolicy

    settings = call.state.settings
    return FilePolicy(roots=roots, allow_dotfiles=settings.allow_dotfiles, max_read_bytes=settings.max_upload_bytes)


async def check_download_dir(call: Call, download_dir: str) -> None:
    """Refuse (or create) ``download_dir`` before anything is paid for; saving checks it again."""
    from fal_mcp.guards import open_output_dir

    roots = await call.state.roots(call.ctx)
    open_output_dir(output_policy(call, roots), download_dir, roots[0] if roots else Path.cwd()).close()


async def save_files(
    call: Call,
    job: JobOutput,
    download_dir: str,
    *,
    name_template: NameTemplate | None = None,
    job_input: dict[str, Any] | None = None,
) -> Path | None:
    """Save every output file into ``download_dir`` (inside the allowed roots), recording saved_path.

    Files are created relative to the directory's descriptor (:class:`~fal_mcp.guards.OutputDirectory`),
    so swapping the directory for a link mid-way cannot send a later file elsewhere. Naming, true
    extensions, provenance and the gallery live in :mod:`fal_mcp.server.saving`; returns the gallery
    page when it was updated.
    """
    from fal_mcp.guards import open_output_dir
    from fal_mcp.server.saving import name_template as checked_template
    from fal_mcp.server.saving import save_job

    template = name_template or checked_template(None, call.state.settings.file_name_template)
    roots = await call.state.roots(call.ctx)
    with open_output_dir(output_policy(call, roots), download_dir, roots[0] if roots else Path.cwd()) as directory:
        return await save_job(call, job, directory, template=template, job_input=job_input)


async def job_result(
    call: Call,
    job: JobOutput,
    *,
    download_dir: str | None = None,
    name_template: NameTemplate | None = None,
    job_input: dict[str, Any] | None = None,
    resumable: bool = False,
) -> CallToolResult:
    """The completed job as a result; ``resumable`` when queue_result can fetch it again (queue jobs)."""
    job.files = find_files(job.output)
    gallery = None
    if download_dir and job.files:
        try:
            gallery = await save_files(call, job, download_dir, name_template=name_template, job_input=job_input)
        except Exception as exc:
            raise _not_saved(job, exc) from exc
        job.gallery = str(gallery) if gallery else None
    job.output, job.full_output = cap_output(call, shorten_data_uris(job.output), job.request_id)
    unsaved = [f for f in job.files if not f.saved_path and not f.url.startswith("data:")]
    if resumable and unsaved and job.request_id and not job.next_step:
        job.next_step = (
            f"To keep local copies of the files, call queue_result(request_id='{job.request_id}', "
            "download_dir='<folder>') (no new charge)."
        )
    content: list[ContentBlock] = [TextContent(type="text", text=summary(job))]
    for f in job.files:
        if f.url.startswith("data:"):
            continue
        content.append(
            ResourceLink(
                type="resource_link",
                uri=f.url,
                name=f.file_name or "output",
                mime_type=f.content_type,
                size=f.size,
            )
        )
    content.extend(saved_links(job.files, gallery))
    if call.state.settings.thumbnails:
        content.extend(await thumbnails(call, job.files))
    return CallToolResult(content=content, structured_content=job.model_dump(mode="json"))


def _not_saved(job: JobOutput, exc: Exception) -> Exception:
    """Saving failed after the job ran: say so without losing the paid job's request id."""
    from fal_mcp.server.errors import ToolFailure, describe

    kind, message, _ = describe(exc)
    if kind == "internal" and isinstance(exc, OSError):  # a full disk, a lost permission: not a bug
        kind, message = "refused", f"writing failed ({exc.strerror or type(exc).__name__})."
    if not job.request_id:
        return exc
    if kind == "internal":  # a bug: reported with an incident id, and still the paid job's request id
        return ToolFailure(str(exc), kind="internal", request_id=job.request_id, endpoint_id=job.endpoint_id)
    return ToolFailure(
        f"the job completed (request {job.request_id}, already paid for) but its files were not saved: {message}",
        kind=kind,
        request_id=job.request_id,
        endpoint_id=job.endpoint_id,
        next_step=(
            f"Nothing is lost: fal keeps the result. Call queue_result(request_id='{job.request_id}') for its output "
            "and links, or repeat this fal_subscribe with a download_dir inside the allowed folders (an identical "
            "call re-attaches without paying again)."
        ),
    )


def saved_links(files: list[OutputFile], gallery: Path | None) -> list[ResourceLink]:
    """A ``file://`` link per saved file (the CDN link expires; this one does not), and the gallery page."""
    links = [
        ResourceLink(
            type="resource_link",
            uri=Path(f.saved_path).as_uri(),
            name=Path(f.saved_path).name,
            description="saved copy",
            mime_type=f.content_type,
            size=f.size,
        )
        for f in files
        if f.saved_path
    ]
    if gallery is not None:
        links.append(
            ResourceLink(
                type="resource_link",
                uri=gallery.as_uri(),
                name=gallery.name,
                description="gallery of the jobs saved in this folder",
                mime_type="text/html",
            )
        )
    return links


def stream_result(call: Call, streamed: StreamOutput) -> CallToolResult:
    """A finished stream: its final output (an LLM's answer) readable in the text, capped like job outputs."""
    streamed.output, streamed.full_output = cap_output(call, shorten_data_uris(streamed.output), None)
    text = f"{streamed.endpoint_id} streamed {streamed.events} event(s); final output:\n{output_text(streamed.output)}"
    if streamed.full_output:
        text += f"\nThe output was too large to return whole; all of it is in {streamed.full_output}"
    if streamed.spend:
        text += f"\n{streamed.spend}"
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    content.extend(
        ResourceLink(type="resource_link", uri=f.url, name=f.file_name or "output", mime_type=f.content_type)
        for f in streamed.files
        if not f.url.startswith("data:")
    )
    return CallToolResult(content=content, structured_content=streamed.model_dump(mode="json"))


def pending_result(job: JobOutput) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=summary(job))], structured_content=job.model_dump(mode="json")
    )
