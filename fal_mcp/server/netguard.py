"""URL guards: the one place that decides which URLs a tool may fetch, and fetches them safely.

A model-supplied URL (``upload_file(url=…)``) must not reach the machine's own services or its
network: loopback, private ranges, link-local (including the cloud metadata address), CGNAT,
multicast, reserved, and IPv6 forms that embed one of those (IPv4-mapped, 6to4, NAT64).
The check runs on every redirect hop, and again at connect time on the socket's real peer,
so a name that resolves differently between check and connect (DNS rebinding) is refused too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import mimetypes
import os
import re
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

import anyio
import httpcore2
import httpx2

from fal_mcp.fal.hosts import FalHosts
from fal_mcp.guards import GuardError, sanitize_file_name
from fal_mcp.log import get_logger

log = get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_FETCH_BYTES = 512 * 1024 * 1024
ALLOW_PRIVATE_HINT = "FAL_MCP_ALLOW_PRIVATE_URLS=1"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# What inet_aton accepts as one part of an IPv4 address: decimal, octal (leading 0) or hex (0x).
_LOOSE_IPV4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_SHOWN_URL_CHARS = 200


class FetchError(GuardError):
    """The URL passed the guards but fetching it failed (HTTP error status, connection failure)."""


@dataclass(frozen=True)
class UrlPolicy:
    """What a tool may fetch.

    ``allowed_hosts`` are exempt from the address checks (e.g. a local fal emulator): ``host`` for
    any port, or ``host:port`` (``[::1]:8790`` for IPv6) for one. ``timeout`` bounds each
    connect/read, ``max_seconds`` the whole fetch.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = DEFAULT_MAX_FETCH_BYTES
    allowed_schemes: tuple[str, ...] = ("http", "https")
    max_redirects: int = 5
    timeout: float = 30.0
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", frozenset(_host_key(entry) for entry in self.allowed_hosts))

    def exempts(self, host: str, port: int) -> bool:
        """Whether connections to ``host:port`` skip the address checks."""
        if self.allow_private:
            return True
        bare = _normal_host(host)
        return bare in self.allowed_hosts or _host_port(bare, port) in self.allowed_hosts


@dataclass(frozen=True)
class FetchedFile:
    """What :func:`fetch_url` got: ``content`` when no ``dest`` was given, ``path`` from :func:`fetch_to_temp`."""

    url: str
    content_type: str
    size: int
    file_name: str
    content: bytes | None = None
    path: Path | None = None


class UrlSettings(Protocol):
    """The part of the server's settings the URL policy needs."""

    allow_private_urls: bool


def url_policy_for(settings: UrlSettings, hosts: FalHosts | None, *, max_bytes: int) -> UrlPolicy:
    """The policy for a tool's fetch: private addresses per settings, fal's own origins (an emulator) exempt.

    Exemptions are per ``host:port``, so pointing fal at a local emulator opens only that port.
    """
    allowed: frozenset[str] = frozenset()
    if hosts is not None:
        allowed = frozenset(_origin_key(origin) for origin in hosts.origins())
    return UrlPolicy(allow_private=settings.allow_private_urls, allowed_hosts=allowed, max_bytes=max_bytes)


# --------------------------------------------------------------------------- checking


async def check_url(policy: UrlPolicy, url: str | httpx2.URL) -> None:
    """Refuse a URL unless its scheme is allowed, it carries no credentials, and its host is public."""
    parsed = _parse(url)
    scheme = parsed.scheme.lower()
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(f"{s}://" for s in policy.allowed_schemes)
        raise GuardError(
            f"{_show(url)} is refused: only {allowed} URLs can be fetched. "
            "For a local file, pass its path instead of a URL."
        )
    if parsed.userinfo:
        raise GuardError(
            "the URL is refused: it contains a user name or password. Pass a URL without credentials "
            "(a pre-signed or public URL)."
        )
    if not parsed.host:
        raise GuardError(f"{_show(url)} is refused: it has no host name.")
    port = parsed.port or (443 if scheme in ("https", "wss") else 80)
    await _checked_addresses(policy, parsed.host, port)


async def _checked_addresses(policy: UrlPolicy, host: str, port: int) -> list[str] | None:
    """The addresses a connection to ``host`` may use, each checked; ``None`` if the host is exempt."""
    if policy.exempts(host, port):
        return None
    literal = _ip_literal(host)
    addresses = [str(literal)] if literal is not None else await _resolve(host, port)
    for address in addresses:
        reason = _non_public_reason(ipaddress.ip_address(address))
        if reason is not None:
            if literal is None:
                subject = f"{host} resolves to {address}, which"
            else:
                subject = host if _normal_host(host) == address else f"{host} ({address})"
            raise GuardError(
                f"{subject} is refused: {reason} addresses cannot be fetched, because that would reach this "
                f"machine or its private network. Use a public URL, or ask the user to set {ALLOW_PRIVATE_HINT}."
            )
    return addresses


async def _resolve(host: str, port: int) -> list[str]:
    """Every address the name resolves to (a module-level seam so tests can stage DNS answers)."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise GuardError(f"{host} could not be resolved. Check the host name in the URL.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise GuardError(f"{host} could not be resolved. Check the host name in the URL.")
    return addresses


def _non_public_reason(address: IPAddress) -> str | None:
    """Why an address is not a public unicast one, or ``None`` if it is. Embedded IPv4 forms are unwrapped."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _non_public_reason(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global:
        return "private"
    return None


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host string names literally, including inet_aton's spellings (``2130706433``, ``0x7f.1``)."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    parts = bare.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_LOOSE_IPV4_PART.match(part) for part in parts):
        return None
    values = [_loose_int(part) for part in parts]
    *head, last = values
    if any(value > 0xFF for value in head) or last >= 1 << (8 * (5 - len(values))):
        raise GuardError(f"{host} is refused: it looks like an IP address but is not a valid one.")
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _loose_int(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if part.startswith("0"):
        return int(part, 8)
    return int(part)


# --------------------------------------------------------------------------- connecting


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves and checks the host itself, then connects to a checked address and re-checks the peer.

    Connecting by address (not by name) is what closes DNS rebinding: the only resolution that
    matters is the one that was checked. TLS still verifies against the host name from the URL.
    """

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await _checked_addresses(self._policy, host, port)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} timed out") from None
        if addresses is None:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
                continue
            await self._check_peer(stream, host)
            return stream
        assert error is not None
        raise error

    async def _check_peer(self, stream: httpcore2.AsyncNetworkStream, host: str) -> None:
        peer = stream.get_extra_info("server_addr")
        reason = "unknown peer" if not peer else _non_public_reason(ipaddress.ip_address(peer[0]))
        if reason is not None:
            await stream.aclose()
            log.warning("netguard.peer_refused", host=host, peer=str(peer and peer[0]), reason=reason)
            raise GuardError(
                f"{host} is refused: the connection reached a {reason} address. "
                f"Use a public URL, or ask the user to set {ALLOW_PRIVATE_HINT}."
            )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise GuardError("Unix sockets cannot be fetched.")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport with connections made through :class:`_GuardedBackend` and no proxies.

    Proxies from the environment are ignored on purpose: a proxy resolves the name itself, which
    would bypass every address check.
    """

    def __init__(
        self, policy: UrlPolicy, *, verify: Any = True, http2: bool = False, limits: httpx2.Limits | None = None
    ) -> None:
        limits = limits or httpx2.Limits(max_connections=20, max_keepalive_connections=5)
        ssl_context = httpx2.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, http2=http2, limits=limits)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=_GuardedBackend(policy),
        )


def guarded_client(policy: UrlPolicy, *, verify: Any = True, **kwargs: Any) -> httpx2.AsyncClient:
    """An ``AsyncClient`` for :func:`fetch_url`: guarded transport, no env proxies, no automatic redirects.

    ``verify`` is httpx2's (an ``ssl.SSLContext`` to trust e.g. the emulator's CA).
    """
    kwargs.setdefault("timeout", policy.timeout)
    transport = GuardedTransport(policy, verify=verify)
    return httpx2.AsyncClient(transport=transport, trust_env=False, follow_redirects=False, **kwargs)


# --------------------------------------------------------------------------- fetching


async def fetch_url(
    policy: UrlPolicy, client: httpx2.AsyncClient, url: str, dest: BinaryIO | None = None
) -> FetchedFile:
    """Fetch ``url`` into ``dest`` (or memory), checking every redirect hop and capping the size.

    Use a client from :func:`guarded_client`: its transport re-checks the address it actually
    connects to, which the per-hop check alone cannot guarantee. On a refusal part of the body
    may already be in ``dest``; the caller discards it.
    """
    try:
        with anyio.fail_after(policy.max_seconds):
            return await _fetch(policy, client, url, dest)
    except TimeoutError:
        raise FetchError(f"{_show(url)} took longer than {policy.max_seconds:g} s to download; try later.") from None
    except httpx2.TimeoutException:
        raise FetchError(f"{_show(url)} did not answer in time; check the URL or try again later.") from None
    except httpx2.HTTPError as exc:
        raise FetchError(f"{_show(url)} could not be fetched ({type(exc).__name__}: {exc}).") from None


async def fetch_bytes(policy: UrlPolicy, client: httpx2.AsyncClient, url: str) -> bytes:
    """The body of ``url`` in memory (bounded by ``policy.max_bytes``)."""
    fetched = await fetch_url(policy, client, url)
    assert fetched.content is not None
    return fetched.content


async def fetch_to_temp(
    policy: UrlPolicy, client: httpx2.AsyncClient, url: str, directory: Path | None = None
) -> FetchedFile:
    """Fetch ``url`` into a new private temporary file (``FetchedFile.path``); the caller deletes it.

    On any failure the partial file is removed before the error propagates.
    """
    fd, name = tempfile.mkstemp(prefix="fal-mcp-fetch-", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fetched = await fetch_url(policy, client, url, handle)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return replace(fetched, path=path)


async def _fetch(policy: UrlPolicy, client: httpx2.AsyncClient, url: str, dest: BinaryIO | None) -> FetchedFile:
    current = _parse(url)
    for _hop in range(policy.max_redirects + 1):
        await check_url(policy, current)
        request = client.build_request("GET", current, headers={"Accept-Encoding": "identity"}, timeout=policy.timeout)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.has_redirect_location:
                current = _next_hop(current, response.headers["location"])
                log.debug("netguard.redirect", status=response.status_code, to=_show(current))
                continue
            if not response.is_success:
                raise FetchError(
                    f"{_show(current)} answered HTTP {response.status_code}; check that the URL is right and public."
                )
            return await _read_body(policy, response, dest)
        finally:
            await response.aclose()
    raise GuardError(
        f"{_show(url)} is refused: it redirected more than {policy.max_redirects} times. Pass the final URL."
    )


async def _read_body(policy: UrlPolicy, response: httpx2.Response, dest: BinaryIO | None) -> FetchedFile:
    url = str(response.url)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise GuardError(_too_large(url, f"{declared} bytes", policy.max_bytes))
    size = 0
    chunks: list[bytes] = []
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > policy.max_bytes:
            raise GuardError(_too_large(url, "more than that", policy.max_bytes))
        if dest is None:
            chunks.append(chunk)
        else:
            dest.write(chunk)
    name = _file_name(response)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type or content_type == "application/octet-stream":
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FetchedFile(
        url=url,
        content_type=content_type,
        size=size,
        file_name=name,
        content=b"".join(chunks) if dest is None else None,
    )


def _file_name(response: httpx2.Response) -> str:
    """Content-Disposition's name (``filename*`` preferred), else the URL's last path segment, made safe."""
    name = ""
    disposition = response.headers.get("content-disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename() or ""
    if not name:
        name = unquote(response.url.path.rstrip("/").rpartition("/")[2])
    name = sanitize_file_name(name, default="download")
    if "." not in name:
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        name += mimetypes.guess_extension(media_type) or ""
    return name


# --------------------------------------------------------------------------- helpers


def _parse(url: str | httpx2.URL) -> httpx2.URL:
    if isinstance(url, httpx2.URL):
        return url
    try:
        return httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise GuardError(f"{_show(url)} is refused: it is not a valid URL.") from None


def _next_hop(current: httpx2.URL, location: str) -> httpx2.URL:
    try:
        return current.join(location)
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise FetchError(f"{_show(current)} redirected to an invalid URL; pass the final URL instead.") from None


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").removesuffix(".").lower()


def _host_key(entry: str) -> str:
    """An ``allowed_hosts`` entry as ``host`` or ``host:port``, in the form :meth:`UrlPolicy.exempts` builds."""
    entry = entry.strip()
    try:
        return str(ipaddress.ip_address(entry.strip("[]")))
    except ValueError:
        pass
    parts = urlsplit(f"//{entry}")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = _normal_host(parts.hostname or entry)
    return _host_port(host, port) if port else host


def _origin_key(origin: str) -> str:
    parts = urlsplit(origin)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    return _host_port(_normal_host(parts.hostname or ""), port)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _show(url: str | httpx2.URL) -> str:
    """The URL for a message: credentials dropped, length bounded."""
    text = str(url)
    try:
        parsed = url if isinstance(url, httpx2.URL) else httpx2.URL(text)
        if parsed.userinfo:
            text = str(parsed.copy_with(username=None, password=None))
    except (httpx2.InvalidURL, TypeError, ValueError):
        text = re.sub(r"//[^/@]*@", "//", text)
    return text if len(text) <= _SHOWN_URL_CHARS else text[: _SHOWN_URL_CHARS - 1] + "…"


def _too_large(url: str, size: str, limit: int) -> str:
    return (
        f"{_show(url)} is refused: it is {size}, over the {limit} byte limit for fetched files. "
        "Use a smaller file, or ask the user to raise the limit."
    )
