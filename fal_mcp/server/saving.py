"""Saving a finished job's files into ``download_dir`` so people can find them.

Each file is streamed into a hidden staging file, its true type is read from its first bytes, images
get their provenance written in (:mod:`fal_mcp.server.provenance`), and only then does it appear under
its predictable name (:mod:`fal_mcp.naming`), never overwriting anything. The job is then added to the
folder's gallery (:mod:`fal_mcp.server.gallery`). Every file operation goes through the one writer
primitive, :class:`~fal_mcp.guards.OutputDirectory` (relative to one opened directory descriptor).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from fal_mcp import __version__
from fal_mcp.log import get_logger
from fal_mcp.naming import NameTemplate, TemplateError
from fal_mcp.server.errors import ToolFailure
from fal_mcp.server.provenance import HEAD_BYTES, FileType, Provenance, sniff, write_provenance

if TYPE_CHECKING:
    from fal_mcp.guards import OutputDirectory
    from fal_mcp.server.jobs import Call
    from fal_mcp.server.outputs import JobOutput

log = get_logger(__name__)


def name_template(raw: str | None, default: str) -> NameTemplate:
    """The template a call will use, checked before anything is paid for (a clear error if it is bad)."""
    try:
        return NameTemplate.parse(default if raw is None else raw)
    except TemplateError as exc:
        raise ToolFailure(f"file_name_template refused: {exc}", kind="invalid_argument") from None


@dataclass
class JobFacts:
    """What a saved job's files say about it: in their metadata and in the gallery."""

    endpoint_id: str
    request_id: str | None
    prompt: str | None
    seed: int | None
    cost_estimate_usd: float | None
    saved_at: datetime

    def provenance(self) -> Provenance:
        return Provenance(
            endpoint=self.endpoint_id,
            request_id=self.request_id,
            created=self.saved_at.isoformat(timespec="seconds"),
            seed=self.seed,
            prompt=self.prompt,
            software=f"fal-mcp {__version__}",
        )


async def job_facts(call: Call, job: JobOutput, job_input: dict[str, Any] | None) -> JobFacts:
    if job_input is None and job.request_id:
        # queue_result: the ledger's preview of the input (long strings there are shortened).
        with contextlib.suppress(Exception):
            record = await call.ledger.get(job.request_id)
            if record is not None:
                job_input = json.loads(record.input_preview)
    job_input = job_input if isinstance(job_input, dict) else {}
    output = job.output if isinstance(job.output, dict) else {}
    prompt = job_input.get("prompt") or job_input.get("text")  # text-to-speech models take "text"
    seed = next((s for s in (output.get("seed"), job_input.get("seed")) if _is_int(s)), None)
    return JobFacts(
        endpoint_id=job.endpoint_id,
        request_id=job.request_id,
        prompt=prompt if isinstance(prompt, str) else None,
        seed=seed,
        cost_estimate_usd=job.cost_estimate_usd,
        saved_at=datetime.now(UTC),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def save_job(
    call: Call,
    job: JobOutput,
    out: OutputDirectory,
    *,
    template: NameTemplate,
    job_input: dict[str, Any] | None = None,
) -> Path | None:
    """Save every file of ``job`` into ``out`` (already checked and open); returns the gallery page if updated."""
    from fal_mcp.server import gallery

    settings = call.state.settings
    facts = await job_facts(call, job, job_input)
    for index, f in enumerate(job.files):
        staged, file_type = await _download(call, out, f.url)
        try:
            if settings.provenance and file_type.kind == "image":
                staged = await anyio.to_thread.run_sync(_with_provenance, out, staged, file_type, facts)
            wanted = template.render(
                endpoint=job.endpoint_id,
                request_id=job.request_id,
                index=index,
                ext=file_type.ext,
                seed=facts.seed,
                name=f.file_name,
                when=facts.saved_at,
            )
            path = out.publish(staged, wanted)
        except BaseException:
            out.remove(staged)
            raise
        f.saved_path = str(path)  # where it really is, even if the folder moved
        with out.open_read(path.name) as saved:
            f.size = os.fstat(saved.fileno()).st_size
        if file_type.ext != "bin":
            f.content_type = file_type.mime
        if file_type.kind == "image" and not (f.width and f.height):
            f.width, f.height = await anyio.to_thread.run_sync(_image_size, out, path.name)
    if not settings.gallery:
        return None
    try:
        return await anyio.to_thread.run_sync(gallery.add_job, out, gallery.entry_for(job, facts))
    except Exception as exc:  # the files are saved; a gallery that cannot be updated never fails the job
        log.warning("gallery.not_updated", directory=str(out.path), error=f"{type(exc).__name__}: {exc}")
        return None


async def _download(call: Call, out: OutputDirectory, url: str) -> tuple[str, FileType]:
    """Stream ``url`` (or decode a data URI) into a staging file; returns its name and true type."""
    from fal_mcp.server.netguard import fetch_url
    from fal_mcp.server.results import _read_bytes

    settings = call.state.settings
    staged, handle = out.stage()
    try:
        with handle:
            if url.startswith("data:"):
                data = await _read_bytes(call, url, settings.max_download_bytes)
                await anyio.to_thread.run_sync(handle.write, data)
                declared = url[5:].split(";", 1)[0].split(",", 1)[0]
            else:
                client, url_policy = await call.state.fetch_client()
                fetched = await fetch_url(
                    replace(url_policy, max_bytes=settings.max_download_bytes), client, url, dest=handle
                )
                declared = fetched.content_type
        with out.open_read(staged) as reader:
            head = reader.read(HEAD_BYTES)
    except BaseException:
        out.remove(staged)
        raise
    return staged, sniff(head, declared, _url_name(url))


def _url_name(url: str) -> str | None:
    from urllib.parse import urlsplit

    return None if url.startswith("data:") else urlsplit(url).path.rsplit("/", 1)[-1] or None


def _with_provenance(out: OutputDirectory, staged: str, file_type: FileType, facts: JobFacts) -> str:
    """A copy of the staged image with provenance written in (the original staged file if that is not possible)."""
    tagged, handle = out.stage()
    try:
        with handle, out.open_read(staged) as source:
            written = write_provenance(source, handle, file_type, facts.provenance())
    except Exception as exc:
        log.info("provenance.skipped", ext=file_type.ext, error=type(exc).__name__)
        written = False
    if not written:
        out.remove(tagged)
        return staged
    out.remove(staged)
    return tagged


def _image_size(out: OutputDirectory, name: str) -> tuple[int | None, int | None]:
    """Width and height from the image header alone (Pillow decodes no pixels to answer)."""
    from PIL import Image

    try:
        with out.open_read(name) as handle, Image.open(handle) as image:
            return image.size
    except Exception:
        return None, None
