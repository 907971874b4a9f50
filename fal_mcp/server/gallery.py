"""The ``download_dir`` gallery: ``fal-gallery.json`` (one record per saved job) and ``index.html`` made from it.

The page is plain static HTML that opens from disk: relative links to the saved files, no network,
no script, every untrusted value (prompts above all) escaped, and a Content-Security-Policy that would
stop anything that slipped through. The JSON manifest is the reusable half: anything else that wants
this folder's jobs (an in-chat gallery) reads it instead of parsing the page.

Both files are only ever replaced atomically, under an exclusive lock on the directory, so concurrent
jobs (even from two server processes) each land in the gallery. A ``index.html`` or manifest that is
not ours is never overwritten: the gallery is then skipped and the files are still saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fal_mcp.log import get_logger
from fal_mcp.server.provenance import FileType, clean_text
from fal_mcp.spend import format_usd

if TYPE_CHECKING:
    from fal_mcp.guards import OutputDirectory
    from fal_mcp.server.outputs import JobOutput
    from fal_mcp.server.saving import JobFacts

log = get_logger(__name__)

INDEX = "index.html"
MANIFEST = "fal-gallery.json"
GENERATOR: Final = "fal-mcp gallery"
MAX_JOBS = 500  # newest first; older jobs' files stay on disk, they just leave the page
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_PROMPT_CHARS = 4000


class GalleryFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="File name inside the gallery's folder")
    kind: Literal["image", "video", "audio", "file"]
    content_type: str | None = None
    url: str | None = Field(None, description="fal's CDN URL (expires)")
    width: int | None = None
    height: int | None = None
    size: int | None = None

    @field_validator("name")
    @classmethod
    def _leaf_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value.startswith(".") or "\x00" in value:
            raise ValueError("not a file name in this folder")
        return value

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        return value if value and value.startswith(("https://", "http://")) else None


class GalleryJob(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_id: str | None
    endpoint_id: str
    saved_at: str
    prompt: str | None = None
    seed: int | None = None
    cost_estimate_usd: float | None = None
    files: list[GalleryFile]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    generator: Literal["fal-mcp gallery"] = GENERATOR
    version: Literal[1] = 1
    jobs: list[GalleryJob] = Field(default_factory=list)


def entry_for(job: JobOutput, facts: JobFacts) -> GalleryJob:
    files = []
    for f in job.files:
        if not f.saved_path:
            continue
        file_type = FileType(Path(f.saved_path).suffix.lstrip("."), f.content_type or "")
        files.append(
            GalleryFile(
                name=Path(f.saved_path).name,
                kind=file_type.kind,
                content_type=f.content_type,
                url=f.url,
                width=f.width,
                height=f.height,
                size=f.size,
            )
        )
    return GalleryJob(
        request_id=job.request_id,
        endpoint_id=job.endpoint_id,
        saved_at=facts.saved_at.isoformat(timespec="seconds"),
        prompt=clean_text(facts.prompt or "")[:MAX_PROMPT_CHARS] or None,
        seed=facts.seed,
        cost_estimate_usd=facts.cost_estimate_usd,
        files=files,
    )


class NotOurs(Exception):
    """The folder has an index.html or manifest we did not write; we leave it alone."""


def add_job(out: OutputDirectory, job: GalleryJob) -> Path:
    """Add (or replace, by request id) one job in the folder's manifest and rewrite the page; returns its path."""
    with out.locked():
        manifest = _read_manifest(out)
        head = _read_head(out, INDEX, 2048)
        if head is not None and GENERATOR.encode() not in head:
            raise NotOurs(f"{out.path / INDEX} exists and was not written by fal-mcp; the gallery is skipped")
        kept = [j for j in manifest.jobs if not (job.request_id and j.request_id == job.request_id)]
        manifest.jobs = [job, *kept][:MAX_JOBS]
        _write(out, MANIFEST, manifest.model_dump_json(indent=1).encode())
        _write(out, INDEX, render(manifest).encode())
    return out.path / INDEX


def _read_manifest(out: OutputDirectory) -> Manifest:
    raw = _read_head(out, MANIFEST, MAX_MANIFEST_BYTES + 1)
    if raw is None:
        return Manifest()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise NotOurs(f"{out.path / MANIFEST} is larger than expected; the gallery is skipped")
    try:
        data = json.loads(raw)
    except ValueError:
        message = f"{out.path / MANIFEST} is not valid JSON; the gallery is skipped (delete it to start afresh)"
        raise NotOurs(message) from None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        raise NotOurs(f"{out.path / MANIFEST} was not written by fal-mcp; the gallery is skipped")
    jobs = []
    for item in data.get("jobs") or []:
        with contextlib.suppress(ValidationError):
            jobs.append(GalleryJob.model_validate(item))
    return Manifest(jobs=jobs)


def _write(out: OutputDirectory, name: str, data: bytes) -> None:
    staged, handle = out.stage()
    try:
        with handle:
            handle.write(data)
        out.replace(staged, name)
    except BaseException:
        out.remove(staged)
        raise


def _read_head(out: OutputDirectory, name: str, size: int) -> bytes | None:
    """The first ``size`` bytes of ``name``; None if there is no such file; NotOurs if it is a link or special."""
    try:
        with out.open_read(name) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise NotOurs(f"{out.path / name} is not a regular file; the gallery is skipped")
            return handle.read(size)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink in its place (ELOOP) or no permission
        raise NotOurs(f"{out.path / name} cannot be read ({exc.strerror}); the gallery is skipped") from None


# --------------------------------------------------------------------------- the page

_CSP = "default-src 'none'; img-src 'self' file:; media-src 'self' file:; style-src 'unsafe-inline'"
_STYLE = """
:root{color-scheme:light dark;--bg:#fafafa;--fg:#1b1b1f;--muted:#666;--card:#fff;--line:#ddd}
@media (prefers-color-scheme:dark){:root{--bg:#121214;--fg:#ececf1;--muted:#9a9aa5;--card:#1c1c20;--line:#333}}
body{margin:0;padding:24px;font:15px/1.45 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0;word-break:break-all}
.meta{color:var(--muted);font-size:13px;margin:2px 0}
article{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px;margin:16px 0}
.prompt{white-space:pre-wrap;overflow-wrap:anywhere;margin:10px 0}
.files{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;max-width:min(100%,420px)}
figure img,figure video{display:block;max-width:100%;height:auto;border-radius:6px;background:var(--line)}
figure audio{width:320px;max-width:100%}
figcaption{font-size:12px;color:var(--muted);margin-top:4px;overflow-wrap:anywhere}
code{font-size:12px}a{color:inherit}
"""


def render(manifest: Manifest) -> str:
    jobs = "\n".join(_render_job(job) for job in manifest.jobs)
    count = len(manifest.jobs)
    updated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="generator" content="{GENERATOR}">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>fal outputs</title><style>{_STYLE}</style></head>\n<body>\n"
        "<h1>fal outputs</h1>\n"
        f'<p class="meta">{count} job{"" if count == 1 else "s"}, newest first · updated {escape(updated)} · '
        f'data in <a href="{MANIFEST}">{MANIFEST}</a></p>\n'
        f"{jobs}\n</body></html>\n"
    )


def _render_job(job: GalleryJob) -> str:
    meta = [escape(job.saved_at)]
    if job.cost_estimate_usd is not None:
        meta.append(f"est. {format_usd(job.cost_estimate_usd)}")
    if job.seed is not None:
        meta.append(f"seed {job.seed}")
    if job.request_id:
        meta.append(f"request <code>{escape(job.request_id)}</code>")
    prompt = f'<p class="prompt">{escape(job.prompt)}</p>' if job.prompt else ""
    alt = escape((job.prompt or job.endpoint_id)[:200])
    files = "".join(_render_file(f, alt) for f in job.files)
    return (
        f"<article><h2>{escape(job.endpoint_id)}</h2>"
        f'<p class="meta">{" · ".join(meta)}</p>{prompt}'
        f'<div class="files">{files}</div></article>'
    )


def _render_file(f: GalleryFile, alt: str) -> str:
    href = escape(quote(f.name))
    size = f" · {f.width}×{f.height}" if f.width and f.height else ""
    if f.size is not None:
        size += f" · {_human(f.size)}"
    original = f' · <a href="{escape(f.url)}" rel="noreferrer">original</a>' if f.url else ""
    caption = f'<figcaption><a href="{href}">{escape(f.name)}</a>{size}{original}</figcaption>'
    dims = f' width="{f.width}" height="{f.height}"' if f.width and f.height else ""
    if f.kind == "image":
        media = f'<a href="{href}"><img src="{href}" alt="{alt}"{dims} decoding="async"></a>'
    elif f.kind == "video":
        media = f'<video controls preload="metadata" src="{href}"{dims}></video>'
    elif f.kind == "audio":
        media = f'<audio controls preload="metadata" src="{href}"></audio>'
    else:
        media = ""
    return f"<figure>{media}{caption}</figure>"


def _human(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size}"
