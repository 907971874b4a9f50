"""What the server's lifespan owns: the fal client (one pooled HTTP client), the ledger, the settings.

Both are created on first use, not at start-up, so the first ``tools/list`` answers as fast as a bare
server. With ``--local`` the CLI owns the embedded emulator; the first tool that needs fal asks it where
it listens (which boots it).
"""

from __future__ import annotations

import functools
import hashlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from fal_mcp.config import Settings, default_cache_dir
from fal_mcp.fal._http import tls_verify
from fal_mcp.fal.auth import FalCredentials, credentials_from_key
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.job_service import SubmitLocks
from fal_mcp.log import get_logger
from fal_mcp.spend import ConfirmationTokens

if TYPE_CHECKING:
    import httpx2
    from anyio.abc import TaskGroup
    from mcp.server.mcpserver import Context

    from fal_mcp.emulator.embedded import EmbeddedEmulator
    from fal_mcp.fal.client import FalClient
    from fal_mcp.job_service import JobService, Progress
    from fal_mcp.ledger import Ledger, LedgerError, OwnedLedger
    from fal_mcp.server.netguard import UrlPolicy

log = get_logger(__name__)

LOCAL_OWNER = "local"
LEDGER_RETRY_SECONDS = 5.0  # an unavailable ledger is tried again this often
PRUNE_EVERY_SECONDS = 6 * 3600.0  # a caller's retention runs on their first call, then this often
LEDGER_BUSY_TIMEOUT = 5.0  # how long a ledger write waits for another process's lock
ROOTS_TIMEOUT_SECONDS = 5.0  # how long a client that declared roots may take to answer roots/list
ROOTS_RETRY_SECONDS = 60.0  # after it did not answer, how long before asking that session again
LOCAL_EMULATOR_KEY = "local-emulator:offline-key"
FAL_KEY_HEADER = "x-fal-key"  # a per-user caller's own fal key (HTTP)
MAX_PER_USER_CLIENTS = 256  # per-user HTTP: views kept for the most recently active keys (they share one pool)


class ServerState:
    def __init__(
        self,
        settings: Settings,
        *,
        credentials: FalCredentials | None,
        not_configured_reason: str | None = None,
        fal_client: FalClient | None = None,
        per_user: bool = False,
        local_fal: EmbeddedEmulator | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.not_configured_reason = not_configured_reason
        self.per_user = per_user
        self._fal = fal_client
        self._owns_fal = fal_client is None
        self._fal_lock = anyio.Lock()
        self._per_user_clients: OrderedDict[str, FalClient] = OrderedDict()
        self._ledger: Ledger | None = None
        self._ledger_failure: LedgerError | None = None  # why the ledger could not be opened
        self._ledger_retry_at = 0.0  # monotonic time of the next attempt to open an unavailable ledger
        self._ledger_lock = anyio.Lock()
        self._prune_at: dict[str, float] = {}  # owner -> monotonic time of their next retention pass
        self.ledger_notice: str | None = None  # said once in jobs_list: e.g. a damaged file was moved aside
        self.local_fal = local_fal  # --local: the emulator the CLI started (and stops)
        self._fetch_client: httpx2.AsyncClient | None = None
        self.started_at = time.time()
        self.background: TaskGroup | None = None  # set by the lifespan; runs reconciliation
        self._reconciled: set[str] = set()
        self.submit_locks = SubmitLocks()  # identical calls in this process pay once
        # Thumbnails decode whole images: a few at a time keeps 200 finishing jobs from spiking memory.
        self.thumbnail_slots = anyio.Semaphore(2)
        # Connections whose client declared roots but did not answer roots/list: not asked again until then.
        self._silent_roots: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        self.confirmations = ConfirmationTokens()  # one-time spend approvals, signed per process

    # -- fal -----------------------------------------------------------------------------------
    async def fal(self) -> FalClient:
        if self._fal is None:
            async with self._fal_lock:
                if self._fal is None:
                    self._fal = await self._create_fal()
        return self._fal

    async def _create_fal(self) -> FalClient:
        from fal_mcp.fal.client import FalClient
        from fal_mcp.fal.hosts import FalHosts

        settings = self.settings
        hosts, credentials, verify = settings.hosts, self.credentials, tls_verify(settings.ca_file)
        if self.local_fal is not None:
            try:
                base_url = await self.local_fal.base_url()
            except RuntimeError as exc:
                from fal_mcp.fal.errors import NotConfiguredError

                raise NotConfiguredError(f"--local: {exc}; its error is on the server's stderr") from exc
            hosts = FalHosts.for_base_url(base_url)
            credentials = credentials or credentials_from_key(LOCAL_EMULATOR_KEY, source="--local")
            log.info("local.emulator.ready", base_url=base_url)
        return FalClient(
            credentials=credentials,
            hosts=hosts,
            verify=verify,
            cache_dir=settings.cache_dir or default_cache_dir(),
            not_configured_reason=self.not_configured_reason,
        )

    async def fal_for(self, ctx: Context | None) -> tuple[FalClient, str]:
        """The client and ledger owner for this call: the server's key, or in per-user HTTP mode the caller's."""
        client, owner = await self._fal_for(ctx)
        self._start_reconciliation(client, owner)
        return client, owner

    async def _fal_for(self, ctx: Context | None) -> tuple[FalClient, str]:
        base = await self.fal()
        if not self.per_user:
            return base, ledger_owner(LOCAL_OWNER, base.http.hosts)
        key = fal_key_from_headers(ctx.headers if ctx is not None else None)
        if key is None:
            from fal_mcp.fal.errors import NotConfiguredError

            raise NotConfiguredError(
                "this server runs in per-user mode: send your own fal key with each request "
                "(HTTP header 'Authorization: Bearer <FAL_KEY>' or 'X-Fal-Key: <FAL_KEY>')"
            )
        owner = ledger_owner(caller_owner(key), base.http.hosts)
        client = self._per_user_clients.get(owner)
        if client is None:
            client = base.with_credentials(credentials_from_key(key, source="request header", per_caller=True))
            self._per_user_clients[owner] = client
            while len(self._per_user_clients) > MAX_PER_USER_CLIENTS:
                self._per_user_clients.popitem(last=False)  # least recently used; rebuilt if it comes back
        self._per_user_clients.move_to_end(owner)
        return client, owner

    async def fetch_client(self) -> tuple[httpx2.AsyncClient, UrlPolicy]:
        """The guarded client for URLs a tool fetches (outputs, upload_file(url=…)) and its policy.

        Separate from fal's API client: it checks every address it connects to (private ranges refused
        unless allowed, fal's own hosts exempt) and never carries the fal key.
        """
        from fal_mcp.server.netguard import guarded_client, url_policy_for

        fal = await self.fal()
        policy = url_policy_for(self.settings, fal.http.hosts, max_bytes=self.settings.max_upload_bytes)  # type: ignore[arg-type]
        if self._fetch_client is None:
            self._fetch_client = guarded_client(policy, verify=tls_verify(self.settings.ca_file))
        return self._fetch_client, policy

    # -- reconciliation --------------------------------------------------------------------------
    def _start_reconciliation(self, fal: FalClient, owner: str) -> None:
        """Once per owner, settle submits an earlier process sent but never heard back about."""
        if owner in self._reconciled or self.background is None or fal.http.credentials is None:
            return
        self._reconciled.add(owner)
        self.background.start_soon(self._reconcile_in_background, fal, owner)

    async def _reconcile_in_background(self, fal: FalClient, owner: str) -> None:
        """Reconciliation never takes the server down: a locked or unreadable ledger is logged, retried later."""
        try:
            if await self.ledger() is None:  # not open yet: try again once it is
                self._reconciled.discard(owner)
                return
            await self.reconcile_intents(fal, owner)
        except Exception as exc:
            self._reconciled.discard(owner)  # the next call for this owner tries again
            log.warning("reconcile.failed", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__)

    async def reconcile_intents(self, fal: FalClient, owner: str) -> int:
        """Settle ``owner``'s submits an earlier process sent but never heard back about (see JobService.reconcile)."""
        from fal_mcp.job_service import Silent

        service = await self.job_service(fal, owner, Silent(), "reconcile")
        return await service.reconcile(self.started_at)

    async def job_service(self, fal: FalClient, owner: str, progress: Progress, tool: str) -> JobService:
        """``owner``'s paid jobs on ``fal``: their ledger view, this process's locks and background tasks."""
        from fal_mcp.job_service import JobService

        service = JobService(
            fal=fal,
            ledger=await self.ledger_for(owner),
            settings=self.settings,
            progress=progress,
            tool=tool,
            locks=self.submit_locks,
            background=self.background,
            session_started_at=self.started_at,
        )
        if service.ledger.available and time.monotonic() >= self._prune_at.get(owner, 0.0):
            self._prune_at[owner] = time.monotonic() + PRUNE_EVERY_SECONDS  # on first use, then this often
            await service.prune()
        return service

    # -- ledger ----------------------------------------------------------------------------------
    async def ledger(self) -> Ledger | None:
        """The ledger, or ``None`` (with :attr:`ledger_error`) when it cannot be opened: jobs still run.

        A ledger that could not be opened (another process held its lock, the disk was full) is tried
        again on a later call, at most every :data:`LEDGER_RETRY_SECONDS`, so the session gets it back
        once it is available. A damaged file is moved aside (never deleted) and a fresh one started.
        """
        if self._ledger is None and time.monotonic() >= self._ledger_retry_at:
            async with self._ledger_lock:
                if self._ledger is None and time.monotonic() >= self._ledger_retry_at:
                    await self._open_ledger()
        return self._ledger

    async def _open_ledger(self) -> None:
        from fal_mcp.ledger import Ledger, LedgerError, default_ledger_path

        path = self.settings.ledger_path or default_ledger_path()
        try:
            opened = await anyio.to_thread.run_sync(
                functools.partial(Ledger.open, path, busy_timeout=LEDGER_BUSY_TIMEOUT, recover_damaged=True)
            )
        except LedgerError as exc:
            self._ledger_failure = exc
            self._ledger_retry_at = time.monotonic() + LEDGER_RETRY_SECONDS
            log.error("ledger.unavailable", error=str(exc), retry_in_s=LEDGER_RETRY_SECONDS)
            return
        self._ledger, self._ledger_failure = opened, None
        if opened.moved_aside is not None:
            self.ledger_notice = (
                f"the job ledger at {path} was damaged; it was moved to {opened.moved_aside} (nothing deleted) "
                "and a new one started, so jobs from before are not listed"
            )

    @property
    def ledger_error(self) -> str | None:
        return None if self._ledger_failure is None else str(self._ledger_failure)

    async def ledger_for(self, owner: str) -> OwnedLedger:
        """``owner``'s view of the ledger: one that records nothing when the ledger cannot be opened."""
        from fal_mcp.ledger import owned_ledger

        return owned_ledger(await self.ledger(), owner, failure=self._ledger_failure)

    # -- roots -----------------------------------------------------------------------------------
    async def roots(self, ctx: Context | None) -> tuple[Path, ...]:
        """Directories files may be read from and written to: the client's roots, else the cwd, plus configured."""
        from fal_mcp.guards import roots_from

        client_roots = await _client_roots(ctx, self._silent_roots) if ctx is not None else None
        if client_roots is UNANSWERED:
            return roots_from(None, None, list(self.settings.allowed_dirs))
        return roots_from(client_roots, Path.cwd(), list(self.settings.allowed_dirs))

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._fal is not None and self._owns_fal:
                await self._fal.aclose()
            if self._fetch_client is not None:
                await self._fetch_client.aclose()
            if self._ledger is not None:
                await self._ledger.close()


FAL_AI = "fal.ai"


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def ledger_owner(caller: str, hosts: FalHosts) -> str:
    """The caller's namespace in the ledger, bound to the fal its jobs run on.

    A job exists only on the fal that ran it: jobs of another fal (the ``--local`` emulator, whose port
    is new in each process, or any ``FAL_MCP_BASE_URL``) are kept apart, so they never show up in,
    or get re-attached from, another fal's view — and real fal's jobs keep the plain caller name.
    """
    origin = _origin(hosts.queue)
    return caller if origin == _origin(FalHosts().queue) else f"{caller}@{origin}"


def fal_of(owner: str) -> str:
    """Which fal an owner's jobs ran on, for people: ``fal.ai`` or ``local emulator at http://…``."""
    _caller, at, origin = owner.partition("@")
    if not at:
        return FAL_AI
    host = origin.split("://", 1)[-1].rsplit(":", 1)[0]
    local = host in ("127.0.0.1", "localhost", "[::1]") or host.startswith("127.")
    return f"local emulator at {origin}" if local else origin


def caller_owner(key: str) -> str:
    """A per-user caller's identity (ledger owner, session binding): a digest of the key, never the key."""
    return "user:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def fal_key_from_headers(headers: Mapping[str, str] | None) -> str | None:
    """A per-user caller's fal key: ``X-Fal-Key``, else the ``Authorization: Bearer|Key`` credentials.

    (With a server token configured, the HTTP layer only lets requests through that carry ``X-Fal-Key``.)
    """
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get(FAL_KEY_HEADER, "").strip():
        return lower[FAL_KEY_HEADER].strip()
    scheme, _, token = lower.get("authorization", "").strip().partition(" ")
    if scheme.lower() in ("bearer", "key") and token.strip():
        return token.strip()
    return None


UNANSWERED: list[str] = []  # (identity) the client declared roots but did not answer roots/list


async def _client_roots(ctx: Context, silent: weakref.WeakKeyDictionary[object, float]) -> list[str] | None:
    """The client's roots on 2025-era sessions whose client declared the capability; ``None`` otherwise.

    A client that declares roots but does not answer ``roots/list`` within :data:`ROOTS_TIMEOUT_SECONDS`
    gets no file roots at all (:data:`UNANSWERED`: only ``FAL_MCP_ALLOWED_DIRS``), not the working directory: it said
    it scopes file access and we cannot learn how, so guessing wider would be unsafe. Calls that touch
    no local file go on; the session is not asked again for :data:`ROOTS_RETRY_SECONDS`.
    """
    import warnings

    caps = ctx.client_capabilities
    if caps is None or getattr(caps, "roots", None) is None:
        return None
    session = ctx.session
    # The SDK makes a session object per request; the connection under it is what lasts (private in 2.x).
    connection = getattr(session, "connection", None) or getattr(session, "_connection", None) or session
    silent_until = silent.get(connection)
    if silent_until is not None and time.monotonic() < silent_until:
        return UNANSWERED
    try:
        from mcp.shared.exceptions import MCPDeprecationWarning

        with warnings.catch_warnings(), anyio.fail_after(ROOTS_TIMEOUT_SECONDS):
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            result = await session.list_roots()
    except TimeoutError:
        silent[connection] = time.monotonic() + ROOTS_RETRY_SECONDS
        log.warning(
            "roots.unanswered",
            timeout_s=ROOTS_TIMEOUT_SECONDS,
            effect="no client roots: local files only from FAL_MCP_ALLOWED_DIRS",
        )
        return UNANSWERED
    except Exception as exc:  # no back-channel (2026 era), or the client failed: fall back to the cwd
        log.debug("roots.unavailable", error=type(exc).__name__)
        return None
    silent.pop(connection, None)
    return [str(root.uri) for root in result.roots]
