"""``FalClient``: the one object the rest of fal-mcp holds — a thin facade over the fal APIs.

Like ``anthropic.AsyncAnthropic``: construct it once (or :meth:`FalClient.from_env`), use its
``queue``, ``runs``, ``realtime``, ``storage`` and ``catalog``, close it at the end. Every API shares
one pooled HTTP client; :meth:`FalClient.with_credentials` gives another caller's view of it.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

from fal_mcp.fal._http import DEFAULT_TIMEOUT, FalHTTP, tls_verify
from fal_mcp.fal.auth import FalCredentials, optional_credentials
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.queue import QueueAPI
from fal_mcp.fal.realtime import RealtimeAPI
from fal_mcp.fal.retry import ReconcilePolicy, RetryPolicy
from fal_mcp.fal.run import RunAPI

if TYPE_CHECKING:
    from fal_mcp.fal.cache import TTLCache
    from fal_mcp.fal.catalog import CatalogAPI
    from fal_mcp.fal.storage import StorageAPI

CA_FILE_ENV = "FAL_MCP_CA_FILE"


def _timeout(value: httpx2.Timeout | float | None) -> httpx2.Timeout:
    if value is None:
        return DEFAULT_TIMEOUT
    return value if isinstance(value, httpx2.Timeout) else httpx2.Timeout(value, connect=min(10.0, value))


class FalClient:
    """fal's platform APIs. Without credentials, key-less calls (model search, schemas) still work and
    the rest raise :class:`~fal_mcp.fal.errors.NotConfiguredError` saying how to set a key."""

    def __init__(
        self,
        *,
        credentials: FalCredentials | None = None,
        hosts: FalHosts | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx2.Timeout | float | None = None,
        verify: ssl.SSLContext | bool = True,
        http_client: httpx2.AsyncClient | None = None,
        cache_dir: Path | None = None,
        reconcile: ReconcilePolicy | None = None,
        not_configured_reason: str | None = None,
        _http: FalHTTP | None = None,
    ) -> None:
        self.http = _http or FalHTTP(
            hosts=hosts,
            credentials=credentials,
            retry=retry,
            timeout=_timeout(timeout),
            verify=verify,
            http_client=http_client,
            not_configured_reason=not_configured_reason,
        )
        self.cache_dir = cache_dir
        self.queue = QueueAPI(self.http, reconcile=reconcile)
        self.runs = RunAPI(self.http)
        self.realtime = RealtimeAPI(self.http)
        self._storage: StorageAPI | None = None
        self._catalog: CatalogAPI | None = None
        self._catalog_cache: TTLCache | None = None  # a parent's, for views from with_credentials

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> FalClient:
        """Key from ``FAL_KEY`` (or ``FAL_KEY_ID``/``FAL_KEY_SECRET``; optional), hosts from ``FAL_MCP_BASE_URL``
        and ``FAL_MCP_<ROLE>_URL``, a custom CA bundle from ``FAL_MCP_CA_FILE``; ``overrides`` win."""
        env = os.environ if env is None else env
        options: dict[str, Any] = {"hosts": FalHosts.from_env(env)}
        if "credentials" not in overrides:
            options["credentials"], options["not_configured_reason"] = optional_credentials(env)
        ca_file = env.get(CA_FILE_ENV, "").strip()
        if ca_file and "verify" not in overrides:
            options["verify"] = tls_verify(ca_file)
        return cls(**{**options, **overrides})

    def with_credentials(self, credentials: FalCredentials | None) -> FalClient:
        """The same client for another key (per-user HTTP mode): shares the connection pool, hosts,
        retry and reconcile policies and the catalog cache; never the key, tokens or request ids."""
        view = FalClient(
            cache_dir=self.cache_dir, reconcile=self.queue.reconcile, _http=self.http.with_credentials(credentials)
        )
        view._catalog_cache = self.catalog.cache
        return view

    @property
    def credentials(self) -> FalCredentials | None:
        return self.http.credentials

    @property
    def hosts(self) -> FalHosts:
        return self.http.hosts

    @property
    def storage(self) -> StorageAPI:
        """Uploads to fal's CDN (created on first use)."""
        if self._storage is None:
            from fal_mcp.fal.storage import StorageAPI

            self._storage = StorageAPI(self.http)
        return self._storage

    @property
    def catalog(self) -> CatalogAPI:
        """Model search, schemas and prices (created on first use)."""
        if self._catalog is None:
            from fal_mcp.fal.catalog import CatalogAPI

            self._catalog = CatalogAPI(self.http, cache_dir=self.cache_dir, cache=self._catalog_cache)
        return self._catalog

    async def aclose(self) -> None:
        """Close the pool if this client created it (views from :meth:`with_credentials` never do)."""
        await self.http.aclose()

    async def __aenter__(self) -> FalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FalClient(queue_host={self.hosts.queue!r}, credentials={self.credentials!r})"
