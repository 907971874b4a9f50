"""Where each fal role lives. Defaults are fal's real hosts; one base URL points every role at an emulator."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

BASE_URL_ENV = "FAL_MCP_BASE_URL"

# fal's backup domains (fal_client 1.0.3): tried once when a connection to the main domain cannot be made.
FAL_BACKUP_ORIGINS = (
    ("https://fal.run", "https://falrun.com"),
    ("https://queue.fal.run", "https://queue.falrun.com"),
)

# Emulator path prefix per role (the emulator serves every role on one origin).
EMULATOR_PREFIXES = {
    "queue": "/queue",
    "run": "/run",
    "rest": "/rest",
    "cdn": "/cdn",
    "platform": "/platform",
    "openapi": "/openapi",
}


@dataclass(frozen=True)
class FalHosts:
    """Base URLs per role, without trailing slashes."""

    queue: str = "https://queue.fal.run"
    run: str = "https://fal.run"
    rest: str = "https://rest.fal.ai"
    cdn: str = "https://v3.fal.media"
    platform: str = "https://api.fal.ai/v1"
    # Per-model OpenAPI document: GET {openapi}?endpoint_id=<id>
    openapi: str = "https://fal.ai/api/openapi/queue/openapi.json"
    # (origin, backup origin): where to connect when the origin cannot be reached at all.
    backups: tuple[tuple[str, str], ...] = FAL_BACKUP_ORIGINS

    @classmethod
    def for_base_url(cls, base_url: str) -> FalHosts:
        """All roles on one origin under the emulator's path prefixes (``FAL_MCP_BASE_URL``)."""
        base = base_url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{BASE_URL_ENV} must be an http(s) URL like http://127.0.0.1:8790, got {base_url!r}")
        return cls(**{role: base + prefix for role, prefix in EMULATOR_PREFIXES.items()}, backups=())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FalHosts:
        """``FAL_MCP_BASE_URL`` for an emulator, then per-role overrides ``FAL_MCP_<ROLE>_URL``."""
        env = os.environ if env is None else env
        base = env.get(BASE_URL_ENV, "").strip()
        hosts = cls.for_base_url(base) if base else cls()
        overrides = {
            role: env[f"FAL_MCP_{role.upper()}_URL"].strip().rstrip("/")
            for role in EMULATOR_PREFIXES
            if env.get(f"FAL_MCP_{role.upper()}_URL", "").strip()
        }
        return replace(hosts, **overrides) if overrides else hosts  # type: ignore[arg-type]

    def roles(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in EMULATOR_PREFIXES}

    def realtime_base(self) -> str:
        """The run host as ws(s)://."""
        if self.run.startswith("https://"):
            return "wss://" + self.run[len("https://") :]
        if self.run.startswith("http://"):
            return "ws://" + self.run[len("http://") :]
        return self.run

    def origins(self) -> frozenset[str]:
        """scheme://host[:port] of every role and its backup: the only places request ids and the key may go."""
        result = {_origin(url) for url in self.roles().values()}
        result |= {backup.lower() for origin, backup in self.backups if origin.lower() in result}
        return frozenset(result)

    def backup_url(self, url: str) -> str | None:
        """``url`` on its origin's backup domain (``queue.fal.run`` → ``queue.falrun.com``), if it has one."""
        origin = _origin(url)
        for primary, backup in self.backups:
            if primary.lower() == origin:
                parts = urlsplit(url)
                rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
                return backup.rstrip("/") + rest
        return None

    def owns_url(self, url: str) -> bool:
        return _origin(url) in self.origins()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
