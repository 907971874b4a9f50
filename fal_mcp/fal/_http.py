"""The one HTTP layer every fal API goes through: a pooled client, auth, retries and error mapping.

Nothing above this module touches ``httpx2`` exceptions or status codes; they see the errors in
:mod:`fal_mcp.fal.errors` and parsed JSON.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2

from fal_mcp import __version__
from fal_mcp.fal.auth import HOW_TO_FIX, FalCredentials, header_safe
from fal_mcp.fal.errors import (
    FalAPIError,
    FalConnectionError,
    FalError,
    FalTimeoutError,
    InvalidArgumentError,
    NotConfiguredError,
    make_api_error,
)
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import NOT_SENT_ERRORS, RetryMode, RetryPolicy
from fal_mcp.log import get_logger

log = get_logger(__name__)

Role = Literal["queue", "run", "rest", "cdn", "platform", "openapi"]
AuthMode = Literal["key", "optional", "none"]

DEFAULT_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
BACKUP_CONNECT_TIMEOUT = 5.0  # seconds to connect to a domain that has a backup (fal_client's figure)
USER_AGENT = f"fal-mcp/{__version__}"


def tls_verify(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """httpx2's ``verify`` for an optional extra CA bundle (e.g. the emulator's ``ca.pem``)."""
    if not ca_file:
        return True
    return ssl.create_default_context(cafile=os.fspath(ca_file))


def _safe_url(url: str | httpx2.URL) -> str:
    """URL for logs and messages: no query string (it may carry tokens)."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def request_was_sent(error: FalError) -> bool:
    """Whether a failed request may have reached fal, its answer lost (marked by :meth:`FalHTTP.transport_error`).

    Only connection failures raised before a byte was sent are known not to have reached fal.
    """
    return not isinstance(error, FalConnectionError) or error.request_sent


def check_header_value(name: str, value: str | None) -> None:
    """Refuse a value that cannot go into an HTTP header (CR, LF, NUL, other control or non-ASCII characters).

    Checked before anything is sent: HTTP libraries only refuse such values mid-send, which would look like a
    request that may have reached fal (retries, history lookups) and echo the value in their error.
    """
    if value is not None and not header_safe(value):
        raise InvalidArgumentError(
            f"{name} contains a line break, control or non-ASCII character, which cannot be sent in an HTTP header; "
            "use plain printable ASCII"
        )


def fal_headers(
    *,
    start_timeout: float | None = None,
    hint: str | None = None,
    priority: str | None = None,
    store_io: bool | None = None,
    object_lifecycle: Mapping[str, Any] | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """fal's platform headers for a submit, run or stream (fal-protocol.md §3.1), validated like the SDKs do.

    ``extra_headers`` come first so they cannot override these, and may never carry credentials.
    """
    headers = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in ("authorization", "host")}
    for name, value in headers.items():
        check_header_value(f"header {name!r}", name)
        check_header_value(f"header {name!r}", value)
    check_header_value("hint", hint)
    if start_timeout is not None:
        if start_timeout <= 1:
            raise ValueError(f"start_timeout must be more than 1 second, got {start_timeout}")
        headers["X-Fal-Request-Timeout"] = str(float(start_timeout))
    if hint:
        headers["X-Fal-Runner-Hint"] = hint
    if priority is not None:
        if priority not in ("normal", "low"):
            raise ValueError(f"priority must be 'normal' or 'low', got {priority!r}")
        headers["X-Fal-Queue-Priority"] = priority
    if store_io is not None:
        headers["X-Fal-Store-IO"] = "1" if store_io else "0"
    if object_lifecycle is not None:
        headers["X-Fal-Object-Lifecycle-Preference"] = json.dumps(dict(object_lifecycle), separators=(",", ":"))
    return headers


def _unsendable(method: str, url: str) -> InvalidArgumentError:
    """h11 refused to write the request (a malformed header): nothing left, and its message would echo the value."""
    return InvalidArgumentError(
        f"{method} {_safe_url(url)} was not sent: a header value is malformed (a line break or control character)"
    )


async def _read_and_close(response: httpx2.Response) -> None:
    try:
        await response.aread()
    finally:
        await response.aclose()


def _json_or_text(response: httpx2.Response) -> tuple[Any, str]:
    text = response.text
    if "json" in response.headers.get("content-type", "") or text[:1] in '{["':
        try:
            return json.loads(text), text
        except ValueError:
            pass
    return None, text


class FalHTTP:
    """Owns the process's pooled ``httpx2.AsyncClient`` and sends every request to fal.

    The key is only ever attached to URLs on the configured fal hosts.
    """

    def __init__(
        self,
        *,
        hosts: FalHosts | None = None,
        credentials: FalCredentials | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx2.Timeout = DEFAULT_TIMEOUT,
        verify: ssl.SSLContext | bool = True,
        http_client: httpx2.AsyncClient | None = None,
        not_configured_reason: str | None = None,
    ) -> None:
        self.hosts = hosts or FalHosts()
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self._not_configured_reason = not_configured_reason
        self._owns_client = http_client is None
        self.client = http_client or httpx2.AsyncClient(
            timeout=timeout,
            verify=verify,
            headers={"User-Agent": USER_AGENT},
            limits=httpx2.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
        )
        self.requests_sent = 0  # every request put on the wire, retries included (for tests and benchmarks)
        # host -> monotonic time until which its refused connections are not retried (shared by per-user views)
        self._unreachable: dict[str, float] = {}

    def with_credentials(self, credentials: FalCredentials | None) -> FalHTTP:
        """Another caller's view: same pool, hosts and retry policy, other credentials (per-user HTTP mode).

        The copy never closes the shared pool, and its key only goes on its own requests.
        """
        view = FalHTTP(
            hosts=self.hosts,
            credentials=credentials,
            retry=self.retry,
            http_client=self.client,
            not_configured_reason=self._not_configured_reason,
        )
        view._unreachable = self._unreachable
        return view

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> FalHTTP:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def url(self, role: Role, path: str = "") -> str:
        base = getattr(self.hosts, role)
        if not path:
            return base
        return f"{base}/{path.lstrip('/')}"

    def auth_headers(self, auth: AuthMode, url: str) -> dict[str, str]:
        if auth == "none":
            return {}
        if self.credentials is None:
            if auth == "optional":
                return {}
            raise NotConfiguredError(self._not_configured_reason or f"fal is not configured: no FAL_KEY. {HOW_TO_FIX}")
        if not self.hosts.owns_url(url):
            raise FalError(f"refusing to send the fal key to {_safe_url(url)}: it is not a configured fal host")
        return {"Authorization": self.credentials.authorization()}

    async def request(
        self,
        method: str,
        url: str,
        *,
        mode: RetryMode,
        auth: AuthMode = "key",
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx2.Timeout | float | None = None,
    ) -> httpx2.Response:
        """Send with the retry policy; return a 2xx response (body read) or raise a :class:`FalError`."""
        build = self._builder(
            method,
            url,
            auth=auth,
            params=params,
            json_body=json_body,
            content=content,
            headers=headers,
            timeout=timeout,
        )
        return await self._send_with_retries(method, url, build, mode=mode)

    async def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.request(method, url, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise FalAPIError(
                f"fal answered {method} {_safe_url(url)} with a body that is not JSON",
                status_code=response.status_code,
                request_id=response.headers.get("x-fal-request-id"),
            ) from exc

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        mode: RetryMode,
        auth: AuthMode = "key",
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx2.Timeout | float | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """Open a streaming response (SSE, downloads). Retries apply only until a 2xx response starts."""
        build = self._builder(
            method, url, auth=auth, params=params, json_body=json_body, content=None, headers=headers, timeout=timeout
        )
        response = await self._send_with_retries(method, url, build, mode=mode, stream=True)
        try:
            yield response
        except httpx2.TransportError as exc:
            raise self.transport_error(exc, url) from None
        finally:
            await response.aclose()

    def _builder(
        self,
        method: str,
        url: str,
        *,
        auth: AuthMode,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        json_body: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        timeout: httpx2.Timeout | float | None,
    ) -> Callable[[str], httpx2.Request]:
        """Builds the request for a target URL (the main domain or its backup), the same on every attempt."""
        all_headers = {**(headers or {}), **self.auth_headers(auth, url)}

        def build(target: str) -> httpx2.Request:
            return self.client.build_request(
                method,
                target,
                params=params,
                json=json_body,
                content=content,
                headers=all_headers,
                timeout=self._timeout_for(target, timeout),
            )

        return build

    async def _send_with_retries(
        self, method: str, url: str, build: Callable[[str], httpx2.Request], *, mode: RetryMode, stream: bool = False
    ) -> httpx2.Response:
        """The one retry loop: send until a 2xx response (returned; with ``stream`` its body is unread and the
        caller closes it) or a final failure, raised as a :class:`FalError`.

        A transport failure is sent again only when the policy allows it for ``mode`` (a submit only when it
        provably never left, see :meth:`_may_retry`); an error status only when
        :meth:`RetryPolicy.should_retry_response` says so; each retry first waits :meth:`RetryPolicy.delay`.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(url, build, stream=stream)
                if stream and not response.is_success:
                    await _read_and_close(response)  # the error body decides, as in a plain request
            except httpx2.LocalProtocolError:
                raise _unsendable(method, url) from None
            except httpx2.TransportError as exc:
                if self._may_retry(mode, exc, attempt, url):
                    await self._backoff(method, url, attempt, None, type(exc).__name__)
                    continue
                raise self.transport_error(exc, url) from None
            self._unreachable.pop(urlsplit(url).netloc, None)
            if response.is_success:
                return response
            body, text = _json_or_text(response)
            if attempt < self.retry.max_attempts and self.retry.should_retry_response(
                mode, response.status_code, response.headers, text
            ):
                retry_after = self.retry.retry_after(response.headers)
                await self._backoff(method, url, attempt, retry_after, response.status_code)
                continue
            raise make_api_error(response.status_code, response.headers, body, text)

    def _may_retry(self, mode: RetryMode, exc: Exception, attempt: int, url: str) -> bool:
        """The retry policy for a transport error, with a short budget for refused connections (see RetryPolicy)."""
        if attempt >= self.retry.max_attempts or not self.retry.should_retry_exception(mode, exc):
            return False
        if not isinstance(exc, httpx2.ConnectError):
            return True
        host, now = urlsplit(url).netloc, time.monotonic()
        if self._unreachable.get(host, 0.0) > now:
            return False
        if attempt >= self.retry.max_connect_attempts:
            self._unreachable[host] = now + self.retry.unreachable_seconds
            return False
        return True

    async def _send(self, url: str, build: Callable[[str], httpx2.Request], *, stream: bool = False) -> httpx2.Response:
        """Send once; when no connection to ``url``'s host can be made and fal has a backup domain for it
        (``queue.fal.run`` → ``queue.falrun.com``, as fal_client does), send there instead. Only a failure
        to connect falls back: nothing had been sent, so this can never run (or charge) anything twice."""
        try:
            self.requests_sent += 1
            return await self.client.send(build(url), stream=stream)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            backup = self.hosts.backup_url(url)
            if backup is None:
                raise
            log.warning("fal.backup_domain", url=_safe_url(url), backup=_safe_url(backup), error=type(exc).__name__)
            try:
                self.requests_sent += 1
                return await self.client.send(build(backup), stream=stream)
            except (httpx2.ConnectError, httpx2.ConnectTimeout):
                raise exc from None  # the main domain's error keeps its retry policy

    def _timeout_for(self, url: str, timeout: httpx2.Timeout | float | None) -> Any:
        """On a domain with a backup, connecting may take at most :data:`BACKUP_CONNECT_TIMEOUT`, so an
        unreachable main domain cannot hold the fallback up (fal_client does the same)."""
        if self.hosts.backup_url(url) is None:
            return timeout if timeout is not None else httpx2.USE_CLIENT_DEFAULT
        base = httpx2.Timeout(timeout) if timeout is not None else self.client.timeout
        connect = BACKUP_CONNECT_TIMEOUT if base.connect is None else min(base.connect, BACKUP_CONNECT_TIMEOUT)
        return httpx2.Timeout(base.read, connect=connect, write=base.write, pool=base.pool)

    def transport_error(self, exc: Exception, url: str) -> FalConnectionError:
        """The :class:`FalConnectionError` for a transport failure, marked for :func:`request_was_sent`."""
        where = _safe_url(url)
        sent = not isinstance(exc, NOT_SENT_ERRORS)
        if isinstance(exc, httpx2.TimeoutException):
            return FalTimeoutError(f"fal did not answer in time ({type(exc).__name__}) at {where}", request_sent=sent)
        return FalConnectionError(f"could not reach fal at {where}: {type(exc).__name__}: {exc}", request_sent=sent)

    async def _backoff(self, method: str, url: str, attempt: int, retry_after: float | None, why: object) -> None:
        delay = self.retry.delay(attempt, retry_after)
        log.info(
            "fal.retry",
            method=method,
            url=_safe_url(url),
            attempt=attempt,
            reason=str(why),
            delay_s=round(delay, 3),
        )
        await anyio.sleep(delay)
