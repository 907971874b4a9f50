"""The in-chat gallery and job monitor: an MCP App (``io.modelcontextprotocol/ui``).

Hosts that render MCP Apps show ``ui://fal/gallery.html`` in a sandboxed iframe next to the results of
the tools bound to it, and the app calls our own tools through the host (queue_status while a job runs,
queue_cancel, queue_submit for "run again", queue_result). The server side is only this: the extension
(advertised capability + one resource) and ``_meta.ui`` on the bound tools. Tool results are the same
for every client, so a host that does not render Apps sees exactly what it saw before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mcp.server.apps import Apps

    from fal_mcp.config import Settings

GALLERY_URI = "ui://fal/gallery.html"
GALLERY_HTML = Path(__file__).with_name("ui") / "gallery.html"
# The tools whose results the gallery shows (a host opens the app beside each of their results).
BOUND_TOOLS = frozenset({"fal_subscribe", "queue_result", "jobs_list"})
# Where fal serves output files (v3.fal.media, v3b.fal.media, fal.media, ...): all the app may load.
FAL_MEDIA_ORIGINS = ("https://fal.media", "https://*.fal.media")


def gallery_html() -> str:
    return GALLERY_HTML.read_text(encoding="utf-8")


def media_origins(settings: Settings) -> list[str]:
    """fal's media hosts, plus the configured CDN's origin when it is elsewhere (an emulator).

    Under ``--local`` the embedded emulator listens on a loopback port chosen when it starts, after the
    resource is declared, so its origin is granted as ``http://127.0.0.1:*`` (loopback only).
    """
    parts = urlsplit(settings.hosts.cdn)
    cdn = f"{parts.scheme}://{parts.netloc}".lower()
    origins = list(FAL_MEDIA_ORIGINS)
    if not (cdn == "https://fal.media" or cdn.endswith(".fal.media")):
        origins.append(cdn)
    if settings.local:
        origins.append("http://127.0.0.1:*")
    return origins


def gallery_extension(settings: Settings) -> Apps:
    """The Apps extension carrying the gallery resource (its CSP admits fal's media and nothing else)."""
    from mcp.server.apps import Apps, ResourceCsp

    apps = Apps()
    apps.add_html_resource(
        GALLERY_URI,
        gallery_html(),
        name="fal gallery",
        title="fal gallery and job monitor",
        description="This session's fal outputs (images, video, audio) and running jobs, with cancel and re-run.",
        csp=ResourceCsp(resource_domains=media_origins(settings), connect_domains=[]),
        prefers_border=True,
    )
    return apps


def ui_meta() -> dict[str, Any]:
    """What a bound tool's ``_meta`` carries (hosts without Apps ignore it)."""
    return {"ui": {"resourceUri": GALLERY_URI}}
