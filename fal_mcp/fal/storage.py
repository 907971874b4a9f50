"""Uploads to fal's CDN (v3), the way fal's official clients do it, with memory bounded by design.

Flow (fal-protocol.md §7.1): a CDN token from ``POST {rest}/storage/auth/token?storage_type=fal-cdn-v3``,
then either one ``POST {cdn}/files/upload`` or, for big files, a multipart upload (create, parts, complete).
Files are streamed from disk in chunks read in a worker thread and never held whole in memory: a single
upload keeps one chunk in flight; a multipart upload keeps at most ``concurrency`` chunks in flight,
because each part is read from its offset only while it is being sent.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import stat
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import quote, urlsplit

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fal_mcp.fal._http import FalHTTP
from fal_mcp.fal.errors import AuthenticationError, FalAPIError, FalError
from fal_mcp.fal.retry import RetryMode
from fal_mcp.log import get_logger

log = get_logger(__name__)

MiB: Final = 1024 * 1024
# Above this a file goes multipart. fal's JS client switches at 90 MiB, its Python client at 100 MiB;
# the CDN's single-upload limit is about 100 MB, so 90 MiB leaves headroom.
DEFAULT_MULTIPART_THRESHOLD: Final = 90 * MiB
DEFAULT_PART_SIZE: Final = 10 * MiB  # both official clients
DEFAULT_CONCURRENCY: Final = 4
READ_CHUNK: Final = 1 * MiB  # bytes read from disk per worker-thread hop
# fal accepts data URIs in *_url fields but recommends them only for small files.
DEFAULT_DATA_URL_MAX_BYTES: Final = 1 * MiB
DEFAULT_FILE_NAME: Final = "upload.bin"  # what fal's Python client names nameless uploads
TOKEN_REFRESH_MARGIN: Final = 60.0  # renew a CDN token this long before it expires (or at 90 % of its life)
TOKEN_FALLBACK_LIFETIME: Final = 300.0  # when fal's expires_at is missing or unreadable
# Bodies may be large and links slow: generous per-operation limits (each chunk written, the wait for
# the answer after the body), but never unbounded, so a stalled CDN connection cannot hang a tool call.
UPLOAD_TIMEOUT: Final = httpx2.Timeout(300.0, connect=10.0, pool=60.0)


class UploadedFile(BaseModel):
    """A file now on fal's CDN: pass ``url`` in any ``*_url`` field of a model's input."""

    model_config = ConfigDict(frozen=True)

    url: str
    content_type: str
    file_name: str
    size: int


class ObjectLifecycle(BaseModel):
    """How long an uploaded object lives and who may read it (fal's ``X-Fal-Object-Lifecycle`` header)."""

    model_config = ConfigDict(frozen=True)

    expiration_duration_seconds: int | None = Field(default=None, gt=0)
    initial_acl: dict[str, Any] | None = None

    @classmethod
    def expires_in(cls, value: str | int) -> ObjectLifecycle:
        """``never | immediate | 1h | 1d | 7d | 30d | 1y`` or seconds, mapped as fal's Python client does."""
        if isinstance(value, bool):
            raise ValueError("expires_in must be a duration name or a number of seconds, not a boolean")
        if isinstance(value, int):
            if value <= 0:
                raise ValueError("expires_in must be more than 0 seconds")
            return cls(expiration_duration_seconds=value)
        if value not in _EXPIRATIONS:
            raise ValueError(f"expires_in must be one of {', '.join(_EXPIRATIONS)} or a number of seconds")
        return cls(expiration_duration_seconds=_EXPIRATIONS[value])

    def header_value(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"))


_EXPIRATIONS: Final[dict[str, int | None]] = {
    "never": None,
    "immediate": 60,
    "1h": 3600,
    "1d": 86400,
    "7d": 604800,
    "30d": 2592000,
    "1y": 31536000,
}


class DataURLTooLargeError(FalError, ValueError):
    """The file is too big to inline as a data URI; upload it instead."""


@dataclass(frozen=True)
class CDNToken:
    """A short-lived CDN credential; never logged (``repr`` hides it)."""

    token: str
    token_type: str
    base_url: str  # where uploads go (the token's ``base_url``; fal returns e.g. https://v3b.fal.media)
    expires_at: float  # epoch seconds
    refresh_at: float  # epoch seconds: renew from here on

    def authorization(self) -> str:
        return f"{self.token_type} {self.token}"

    def __repr__(self) -> str:
        return f"CDNToken(base_url={self.base_url!r}, expires_at={self.expires_at!r}, token=[REDACTED])"


class _TokenResponse(BaseModel):
    token: str
    token_type: str = "Bearer"
    base_url: str | None = None
    expires_at: str | None = None


class _MultipartCreated(BaseModel):
    access_url: str
    upload_id: str = Field(alias="uploadId")


def guess_content_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def encode_data_url(data: bytes, content_type: str) -> str:
    """``data:<mime>;base64,<b64>`` — what fal's clients call ``encode``."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


async def encode_path_as_data_url(
    path: Path, max_bytes: int = DEFAULT_DATA_URL_MAX_BYTES, content_type: str | None = None
) -> str:
    """A small local file as a data URI (no upload, no CDN round trip). Bigger files must be uploaded."""
    size = (await anyio.Path(path).stat()).st_size
    if size > max_bytes:
        raise DataURLTooLargeError(
            f"{path.name} is {size} bytes; data URIs are limited to {max_bytes} bytes, so upload it to fal's CDN"
        )
    data = await anyio.Path(path).read_bytes()
    if len(data) > max_bytes:  # it grew since stat
        raise DataURLTooLargeError(f"{path.name} is larger than {max_bytes} bytes; upload it to fal's CDN")
    return encode_data_url(data, content_type or guess_content_type(path.name))


class _FileSlice:
    """A re-iterable request body: bytes ``[offset, offset + length)`` of an open file, read chunk by chunk
    (``pread`` in a worker thread) each time it is iterated — so a retried request simply reads its slice
    again, and several parts can be read from one descriptor at once.

    The file is never re-opened by name: what was checked is what is sent. ``end`` is the size the upload
    declared; the slice that reaches it fails if the file has grown past it, rather than send a prefix.
    """

    def __init__(self, file: BinaryIO, offset: int, length: int, end: int, chunk_size: int = READ_CHUNK) -> None:
        self.file, self.offset, self.length, self.end, self.chunk_size = file, offset, length, end, chunk_size

    @property
    def name(self) -> str:
        return Path(str(getattr(self.file, "name", "") or DEFAULT_FILE_NAME)).name

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fd = self.file.fileno()
        at, stop = self.offset, self.offset + self.length
        while at < stop:
            chunk = await anyio.to_thread.run_sync(os.pread, fd, min(self.chunk_size, stop - at), at)
            if not chunk:
                raise FalError(f"{self.name} became shorter while it was being uploaded")
            at += len(chunk)
            yield chunk
        if stop == self.end and await anyio.to_thread.run_sync(os.pread, fd, 1, stop):  # type: ignore[arg-type]
            raise FalError(f"{self.name} grew while it was being uploaded; upload it again once it is written")


async def _exactly(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, failing if they add up to more or less than the declared ``size``."""
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise FalError(f"the upload stream is longer than its declared size of {size} bytes")
        yield chunk
    if sent != size:
        raise FalError(f"the upload stream ended after {sent} of its declared {size} bytes")


async def _parts_from_stream(chunks: AsyncIterable[bytes], part_size: int) -> AsyncIterator[bytes]:
    """Regroup a stream of arbitrary chunks into parts of exactly ``part_size`` (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


Body = bytes | _FileSlice | AsyncIterator[bytes]


class StorageAPI:
    """fal's CDN v3 uploads. One instance per :class:`FalHTTP`; safe to share between tasks."""

    def __init__(
        self,
        http: FalHTTP,
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if part_size < 1 or concurrency < 1 or multipart_threshold < 0:
            raise ValueError("part_size and concurrency must be positive, multipart_threshold non-negative")
        self._http = http
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.concurrency = concurrency
        self._clock = clock
        self._token: CDNToken | None = None
        self._token_lock = anyio.Lock()
        self.token_requests = 0  # tokens fetched from fal (for tests and diagnostics)

    # -- uploads ----------------------------------------------------------------------------------

    async def upload_path(
        self,
        path: Path,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        lifecycle: ObjectLifecycle | None = None,
    ) -> UploadedFile:
        """Upload a local file this process owns (e.g. a temporary download); see :meth:`upload_file`.

        Files an agent named go through the file guard and :meth:`upload_file` with the checked handle.
        """
        path = Path(path)
        try:
            handle = open(path, "rb")  # noqa: ASYNC230, SIM115  # opening is instant; reads go to a thread
        except IsADirectoryError:
            raise FalError(f"{path.name} is not a regular file") from None
        with handle:
            return await self.upload_file(
                handle, content_type=content_type, file_name=file_name or path.name, lifecycle=lifecycle
            )

    async def upload_file(
        self,
        file: BinaryIO,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        lifecycle: ObjectLifecycle | None = None,
    ) -> UploadedFile:
        """Upload an open file, streamed from its descriptor (single request up to the threshold, multipart above).

        The size is taken from ``fstat`` on the descriptor and exactly that many bytes are sent, so a file
        that grows meanwhile can neither exceed a size the caller checked nor be sent truncated (it fails).
        Memory stays flat: one chunk in flight for a single upload, ``concurrency`` chunks for multipart.
        The caller keeps ownership of ``file`` (it is not closed).
        """
        info = os.fstat(file.fileno())
        name = file_name or Path(str(getattr(file, "name", "") or "")).name or DEFAULT_FILE_NAME
        if not stat.S_ISREG(info.st_mode):
            raise FalError(f"{name} is not a regular file")
        size = info.st_size
        mime = content_type or guess_content_type(name)
        if size <= self.multipart_threshold:
            url = await self._single(_FileSlice(file, 0, size, size), size, mime, name, lifecycle, replayable=True)
        else:
            step = self.part_size
            parts = (_FileSlice(file, at, min(step, size - at), size) for at in range(0, size, step))
            url = await self._multipart(_aiter(parts), mime, name, lifecycle)
        log.info("fal.upload.done", file_name=name, size=size, multipart=size > self.multipart_threshold)
        return UploadedFile(url=url, content_type=mime, file_name=name, size=size)

    async def upload_bytes(
        self,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        *,
        lifecycle: ObjectLifecycle | None = None,
    ) -> UploadedFile:
        """Upload bytes already in memory (multipart above the threshold, parts sliced on demand)."""
        name = file_name or DEFAULT_FILE_NAME
        mime = content_type or guess_content_type(name)
        size = len(data)
        if size <= self.multipart_threshold:
            url = await self._single(bytes(data), size, mime, name, lifecycle, replayable=True)
        else:
            view = memoryview(data)
            parts = (bytes(view[i : i + self.part_size]) for i in range(0, size, self.part_size))
            url = await self._multipart(_aiter(parts), mime, name, lifecycle)
        return UploadedFile(url=url, content_type=mime, file_name=name, size=size)

    async def upload_stream(
        self,
        chunks: AsyncIterable[bytes],
        size: int | None,
        content_type: str | None = None,
        file_name: str | None = None,
        *,
        lifecycle: ObjectLifecycle | None = None,
    ) -> UploadedFile:
        """Pipe a one-shot byte stream (e.g. a download) to the CDN without a temporary file.

        - ``size`` ≤ part size: buffered (≤ one part in memory), then sent like bytes — retried if needed.
        - ``size`` ≤ threshold: one streamed request with that ``Content-Length``. A stream cannot be
          replayed, so this request is not retried (the caller may fetch again).
        - ``size`` unknown or above the threshold: multipart, each part buffered from the stream and
          retried on its own; memory stays ≈ (concurrency + 1) × part size. A stream that turns out to
          fit in one part is sent as a single upload.
        """
        name = file_name or DEFAULT_FILE_NAME
        mime = content_type or guess_content_type(name)
        if size is not None and size < 0:
            raise ValueError("size must be non-negative or None")
        if size is not None and size <= self.part_size:
            data = b"".join([chunk async for chunk in _exactly(chunks, size)])
            return await self.upload_bytes(data, mime, name, lifecycle=lifecycle)
        if size is not None and size <= self.multipart_threshold:
            url = await self._single(_exactly(chunks, size), size, mime, name, lifecycle, replayable=False)
            return UploadedFile(url=url, content_type=mime, file_name=name, size=size)

        source = _exactly(chunks, size) if size is not None else chunks
        parts = _parts_from_stream(source, self.part_size)
        first = await anext(parts, None)
        if first is None or len(first) < self.part_size:  # the whole stream fit in one part
            await parts.aclose()  # type: ignore[attr-defined]
            return await self.upload_bytes(first or b"", mime, name, lifecycle=lifecycle)
        total = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal total
            async for part in _prepend(first, parts):
                total += len(part)
                yield part

        url = await self._multipart(counted(), mime, name, lifecycle)
        return UploadedFile(url=url, content_type=mime, file_name=name, size=total)

    # -- the CDN token ----------------------------------------------------------------------------

    async def token(self, *, stale: CDNToken | None = None) -> CDNToken:
        """A valid CDN token, fetched at most once at a time; ``stale`` forces replacing that token."""
        async with self._token_lock:
            current = self._token
            if current is not None and current is not stale and self._clock() < current.refresh_at:
                return current
            self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> CDNToken:
        self.token_requests += 1
        body = await self._http.request_json(
            "POST",
            self._http.url("rest", "storage/auth/token"),
            params={"storage_type": "fal-cdn-v3"},
            json_body={},
            headers={"Accept": "application/json"},
            mode=RetryMode.IDEMPOTENT,
            auth="key",
        )
        try:
            parsed = _TokenResponse.model_validate(body)
        except ValidationError as exc:
            raise FalAPIError(f"fal's storage token answer is malformed: {exc.error_count()} problem(s)") from None
        now = self._clock()
        expires_at = _parse_expiry(parsed.expires_at, now)
        lifetime = max(0.0, expires_at - now)
        base_url = self._cdn_base(parsed.base_url)
        log.info("fal.cdn.token", base_url=base_url, lifetime_s=round(lifetime))
        return CDNToken(
            token=parsed.token,
            token_type=parsed.token_type or "Bearer",
            base_url=base_url,
            expires_at=expires_at,
            refresh_at=expires_at - min(TOKEN_REFRESH_MARGIN, lifetime * 0.1),
        )

    def _cdn_base(self, base_url: str | None) -> str:
        """The token's ``base_url`` when it is safe to send the token there, else the configured CDN host."""
        if base_url and self._trusted(base_url):
            return base_url.rstrip("/")
        if base_url:
            log.warning("fal.cdn.untrusted_base_url", base_url=base_url)
        return self._http.hosts.cdn.rstrip("/")

    def _trusted(self, url: str) -> bool:
        """CDN tokens only travel over TLS, or to a configured fal host (the local emulator is plain http)."""
        return urlsplit(url).scheme == "https" or self._http.hosts.owns_url(url)

    # -- requests ---------------------------------------------------------------------------------

    async def _cdn_request(
        self,
        method: str,
        target: str | Callable[[CDNToken], str],
        *,
        headers: dict[str, str],
        content: Body | None = None,
        json_body: Any = None,
        replayable: bool = True,
    ) -> httpx2.Response:
        """One CDN call with token auth; a 401 renews the token and sends once more (if the body allows)."""
        token = await self.token()
        for attempt in (1, 2):
            url = target(token) if callable(target) else target
            if not self._trusted(url):
                raise FalError(f"refusing to send a fal CDN token to {urlsplit(url).netloc}: not TLS, not a fal host")
            try:
                return await self._http.request(
                    method,
                    url,
                    mode=RetryMode.IDEMPOTENT if replayable else RetryMode.NONE,
                    auth="none",
                    content=content,  # type: ignore[arg-type]  # FalHTTP passes any httpx2 body through
                    json_body=json_body,
                    headers={**headers, "Authorization": token.authorization()},
                    timeout=UPLOAD_TIMEOUT,
                )
            except AuthenticationError:
                if attempt == 2 or not replayable:
                    raise
                log.info("fal.cdn.token_rejected", method=method)
                token = await self.token(stale=token)
        raise AssertionError("unreachable")

    def _upload_headers(self, content_type: str, file_name: str, lifecycle: ObjectLifecycle | None) -> dict[str, str]:
        headers = {"Content-Type": content_type, "X-Fal-File-Name": _header_safe(file_name)}
        if lifecycle is not None:
            value = lifecycle.header_value()
            # fal's Python client sends both: the CDN reads the first, storage initiation the second.
            headers["X-Fal-Object-Lifecycle"] = value
            headers["X-Fal-Object-Lifecycle-Preference"] = value
        return headers

    async def _single(
        self,
        body: Body,
        size: int,
        content_type: str,
        file_name: str,
        lifecycle: ObjectLifecycle | None,
        *,
        replayable: bool,
    ) -> str:
        headers = {
            **self._upload_headers(content_type, file_name, lifecycle),
            "Accept": "application/json",
            "Content-Length": str(size),
        }
        response = await self._cdn_request(
            "POST", lambda token: f"{token.base_url}/files/upload", headers=headers, content=body, replayable=replayable
        )
        return _access_url(response)

    async def _multipart(
        self,
        parts: AsyncIterator[bytes | _FileSlice],
        content_type: str,
        file_name: str,
        lifecycle: ObjectLifecycle | None,
    ) -> str:
        """Create, send the parts with bounded concurrency (each retried on its own), complete."""
        created_response = await self._cdn_request(
            "POST",
            lambda token: f"{token.base_url}/files/upload/multipart",
            headers={**self._upload_headers(content_type, file_name, lifecycle), "Accept": "application/json"},
        )
        try:
            created = _MultipartCreated.model_validate(created_response.json())
        except (ValueError, ValidationError):
            raise FalAPIError("fal's CDN answered the multipart upload without access_url/uploadId") from None
        base = f"{created.access_url}/multipart/{quote(created.upload_id, safe='')}"
        etags: dict[int, str] = {}

        async def send_part(number: int, body: bytes | _FileSlice) -> None:
            length = len(body) if isinstance(body, bytes) else body.length
            response = await self._cdn_request(
                "PUT",
                f"{base}/{number}",
                headers={"Content-Type": content_type, "Accept-Encoding": "identity", "Content-Length": str(length)},
                content=body,
            )
            etag = response.headers.get("etag")
            if not etag:
                raise FalAPIError(f"fal's CDN did not return an ETag for part {number}")
            etags[number] = etag

        sender, receiver = anyio.create_memory_object_stream[tuple[int, bytes | _FileSlice]](0)

        async def produce() -> None:
            async with sender:
                number = 0
                async for body in parts:
                    number += 1
                    await sender.send((number, body))

        async def work(inbox: Any) -> None:
            async with inbox:
                async for number, body in inbox:
                    await send_part(number, body)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(produce)
                async with receiver:
                    for _ in range(self.concurrency):
                        group.start_soon(work, receiver.clone())
        except ExceptionGroup as group_error:
            raise _first_error(group_error) from None

        ordered = [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]
        completed = await self._cdn_request(
            "POST", f"{base}/complete", headers={"Accept": "application/json"}, json_body={"parts": ordered}
        )
        try:
            answer = completed.json() if completed.content else None
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("access_url"), str):
            return answer["access_url"]
        return created.access_url


def _access_url(response: httpx2.Response) -> str:
    try:
        url = response.json()["access_url"]
    except (ValueError, KeyError, TypeError):
        raise FalAPIError("fal's CDN accepted the upload but did not return its access_url") from None
    if not isinstance(url, str) or not url:
        raise FalAPIError("fal's CDN accepted the upload but did not return its access_url")
    return url


def _parse_expiry(value: str | None, now: float) -> float:
    if value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            log.warning("fal.cdn.token_expiry_unreadable", expires_at=value)
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    return now + TOKEN_FALLBACK_LIFETIME


def _header_safe(name: str) -> str:
    """File names go in a header: control characters out, non-ASCII percent-encoded (fal does not say)."""
    cleaned = "".join(c for c in name if c >= " " and c != "\x7f") or DEFAULT_FILE_NAME
    if cleaned.isascii():
        return cleaned
    return quote(cleaned, safe=" !#$&'()+,;=@[]^_`{}~-.")


def _first_error(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first real failure of a task group (the others are usually its consequences)."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


async def _aiter(items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for item in rest:
        yield item


__all__ = [
    "DEFAULT_DATA_URL_MAX_BYTES",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "CDNToken",
    "DataURLTooLargeError",
    "ObjectLifecycle",
    "StorageAPI",
    "UploadedFile",
    "encode_data_url",
    "encode_path_as_data_url",
    "guess_content_type",
]
