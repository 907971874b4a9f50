"""upload_file: a local file, an http(s) URL or base64 data, to a fal CDN URL that any model input accepts."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from fal_mcp.server.errors import ToolFailure, tool_errors
from fal_mcp.server.jobs import Call
from fal_mcp.server.outputs import UploadOutput

UPLOAD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


@tool_errors
async def upload_file(
    ctx: Context,
    path: Annotated[str | None, Field(description="Local file inside the workspace")] = None,
    url: Annotated[str | None, Field(description="Public http(s) URL to copy")] = None,
    data: Annotated[str | None, Field(description="Base64 content (small files)")] = None,
    content_type: Annotated[str | None, Field(description="MIME type, e.g. image/png")] = None,
    file_name: str | None = None,
) -> UploadOutput:
    """Upload one file (path, url or data) to fal's CDN and return its URL for a model input."""
    given = [name for name, value in (("path", path), ("url", url), ("data", data)) if value]
    if len(given) != 1:
        raise ToolFailure("pass exactly one of path, url or data", kind="invalid_argument")
    call = await Call.start(ctx, "upload_file")
    settings = call.state.settings
    storage = call.fal.storage
    if path:
        from fal_mcp.guards import FilePolicy, resolve_readable

        roots = await call.state.roots(ctx)
        policy = FilePolicy(
            roots=roots, allow_dotfiles=settings.allow_dotfiles, max_read_bytes=settings.max_upload_bytes
        )
        readable = resolve_readable(policy, path, roots[0] if roots else Path.cwd())
        with readable.open() as handle:  # the checked file itself, never re-opened by name
            uploaded = await storage.upload_file(
                handle, content_type=content_type or readable.mime_type, file_name=file_name or readable.name
            )
    elif url:
        from fal_mcp.server.netguard import fetch_to_temp

        client, url_policy = await call.state.fetch_client()
        fetched = await fetch_to_temp(url_policy, client, url)
        assert fetched.path is not None  # fetch_to_temp always spools to a temporary file
        try:
            uploaded = await storage.upload_path(
                fetched.path,
                content_type=content_type or fetched.content_type,
                file_name=file_name or fetched.file_name,
            )
        finally:
            fetched.path.unlink(missing_ok=True)
    else:
        assert data is not None
        payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
        if data.startswith("data:") and not content_type:
            content_type = data[5:].split(";", 1)[0] or None
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ToolFailure("data is not valid base64", kind="invalid_argument") from None
        if len(raw) > settings.max_upload_bytes:
            raise ToolFailure("data is larger than the upload limit; pass a path instead", kind="invalid_argument")
        name = file_name or "upload" + (mimetypes.guess_extension(content_type or "") or ".bin")
        uploaded = await storage.upload_bytes(raw, content_type or "application/octet-stream", name)
    return UploadOutput(
        url=uploaded.url, content_type=uploaded.content_type, file_name=uploaded.file_name, size=uploaded.size
    )


def register(server: MCPServer) -> None:
    server.add_tool(upload_file, title="Upload a file to fal", annotations=UPLOAD)
