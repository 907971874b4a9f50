"""Endpoint ids, parsed exactly as fal's official clients do (``AppId.from_endpoint_id`` / ``parseEndpointId``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fal_mcp.fal.errors import InvalidEndpointIdError

NAMESPACES = ("workflows", "comfy")
_LEGACY = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
MAX_ENDPOINT_ID_LENGTH = 256  # real ids are under 100 characters; longer ones would break URLs and cache names
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{7,127}$")


@dataclass(frozen=True)
class EndpointId:
    """``[namespace/]owner/alias[/path...]``; ``fal-ai/flux/dev`` is owner ``fal-ai``, alias ``flux``, path ``dev``."""

    owner: str
    alias: str
    path: str = ""
    namespace: str | None = None

    @classmethod
    def parse(cls, raw: str) -> EndpointId:
        text = (raw or "").strip()
        hint = "an endpoint id looks like 'fal-ai/flux/dev' (owner/model[/sub-path])"
        if not text:
            raise InvalidEndpointIdError(f"empty endpoint id: {hint}")
        if len(text) > MAX_ENDPOINT_ID_LENGTH:
            raise InvalidEndpointIdError(
                f"endpoint id of {len(text)} characters refused (at most {MAX_ENDPOINT_ID_LENGTH}): {hint}"
            )
        if "://" in text or "?" in text or "#" in text or "\\" in text or any(c.isspace() for c in text):
            raise InvalidEndpointIdError(f"invalid endpoint id {text!r}: {hint}, not a URL")
        parts = text.strip("/").split("/")
        if len(parts) == 1:
            legacy = _LEGACY.match(parts[0])
            if not legacy:
                raise InvalidEndpointIdError(f"invalid endpoint id {text!r}: {hint}")
            owner, alias = legacy.groups()
            return cls(owner=owner, alias=alias)
        namespace: str | None = None
        if parts[0] in NAMESPACES:
            if len(parts) < 3:
                raise InvalidEndpointIdError(
                    f"invalid endpoint id {text!r}: '{parts[0]}/' ids need an owner and a name, "
                    f"e.g. '{parts[0]}/owner/name'"
                )
            namespace, parts = parts[0], parts[1:]
        for segment in parts:
            if not segment or segment in (".", "..") or not _SEGMENT.match(segment):
                raise InvalidEndpointIdError(f"invalid endpoint id {text!r}: bad segment {segment!r}; {hint}")
        return cls(owner=parts[0], alias=parts[1], path="/".join(parts[2:]), namespace=namespace)

    @property
    def app(self) -> str:
        """``[ns/]owner/alias``: the part status, result and cancel URLs are built from."""
        base = f"{self.owner}/{self.alias}"
        return f"{self.namespace}/{base}" if self.namespace else base

    def __str__(self) -> str:
        return f"{self.app}/{self.path}" if self.path else self.app


def check_request_id(request_id: str) -> str:
    """Request ids are opaque (UUIDs in practice); refuse anything that could change a URL's path."""
    value = (request_id or "").strip()
    if not _REQUEST_ID.match(value):
        raise InvalidEndpointIdError(
            f"invalid request id {request_id!r}: use the request_id a submit returned (e.g. a UUID)"
        )
    return value
