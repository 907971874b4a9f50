"""fal's storage: CDN tokens and signed uploads on the REST host, uploads and file serving on the CDN host.

Files live in memory while small and spill to a private temp directory past ``spill_bytes``, so a
1 GiB upload streams to disk instead of sitting in RAM. Uploads are streamed from the socket, never
read whole. A stored file's URL is ``<origin>/cdn/files/b/<hex>/<id>_<name>``; :meth:`FileStore.read_url`
finds it again by path whatever host the URL names (``v3b.fal.media`` included).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import shutil
import string
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from fal_mcp.emulator import realtime, webhooks
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

SPILL_BYTES = 4 * 1024 * 1024  # beyond this a file's bytes go to disk
IO_CHUNK = 1024 * 1024  # disk writes and reads are batched to this size
CDN_TOKEN_SECONDS = 30 * 24 * 3600  # fal's observed CDN token lifetime
SIGNED_URL_SECONDS = 3600
STORAGE_TYPE = "fal-cdn-v3"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_ID_ALPHABET = string.ascii_letters + string.digits + "-"  # no "_": it separates the id from the name


class UploadTooLarge(Exception):
    """The body grew past the upload's size limit (answered with 413)."""


class StorageError(Exception):
    """A client mistake in a storage call; ``status_code`` and ``detail`` become fal's ``{"detail": …}``."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass
class Blob:
    """Bytes held either in memory or in a temp file."""

    size: int
    data: bytes | None = None
    disk_path: Path | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.disk_path is not None
        return self.disk_path.read_bytes()

    async def chunks(self, chunk_size: int = IO_CHUNK) -> AsyncIterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), chunk_size):
                yield self.data[start : start + chunk_size]
            return
        assert self.disk_path is not None
        handle: IO[bytes] = await anyio.to_thread.run_sync(self.disk_path.open, "rb")
        try:
            while chunk := await anyio.to_thread.run_sync(handle.read, chunk_size):
                yield chunk
        finally:
            # Not awaited: when the client hangs up, this runs inside a cancelled scope, where an await
            # would raise again and leak the file. Closing a file opened for reading does not block.
            handle.close()

    def remove(self) -> None:
        if self.disk_path is not None:
            self.disk_path.unlink(missing_ok=True)


class _Sink:
    """Collects a streamed body: memory first, a temp file once it outgrows ``spill_bytes``."""

    def __init__(self, store: FileStore, *, max_bytes: int | None = None, digest: bool = False) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._md5 = hashlib.md5(usedforsecurity=False) if digest else None
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise UploadTooLarge(f"upload exceeds {self._max_bytes} bytes")
        if self._md5 is not None:
            self._md5.update(chunk)
        self._buffer += chunk
        if len(self._buffer) >= IO_CHUNK and (self._file is not None or self.size > self._store.spill_bytes):
            await self._flush()

    async def _flush(self) -> None:
        if self._file is None:
            self._path = self._store.temp_path()
            self._file = await anyio.to_thread.run_sync(self._path.open, "wb")
        data = bytes(self._buffer)
        self._buffer.clear()
        await anyio.to_thread.run_sync(self._file.write, data)

    async def finish(self) -> Blob:
        if self._file is None:
            return Blob(size=self.size, data=bytes(self._buffer))
        await self._flush()
        await anyio.to_thread.run_sync(self._file.close)
        return Blob(size=self.size, disk_path=self._path)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    @property
    def etag(self) -> str:
        return f'"{self._md5.hexdigest() if self._md5 is not None else uuid.uuid4().hex}"'


@dataclass
class StoredFile:
    """One file on the emulated CDN."""

    key: str  # "files/b/<hex>/<id>_<name>"
    content_type: str
    file_name: str
    blob: Blob
    etag: str
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None

    @property
    def path(self) -> str:
        return f"/cdn/{self.key}"

    @property
    def size(self) -> int:
        return self.blob.size


@dataclass
class _Multipart:
    """An upload assembled from numbered parts (fal CDN multipart, and the JS client's signed variant)."""

    upload_id: str
    key: str
    content_type: str
    expires_at: float | None
    parts: dict[int, tuple[Blob, str]] = field(default_factory=dict)  # part number → (bytes, etag)


@dataclass
class _Reservation:
    """A file URL handed out by ``upload/initiate`` whose bytes arrive later by signed PUT."""

    key: str
    content_type: str
    expires_at: float | None


def sanitize_file_name(name: str | None, content_type: str) -> str:
    """A URL-safe file name; without one, ``upload`` plus the content type's usual extension."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip("._")[:128]
    if cleaned:
        return cleaned
    return "upload" + (mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin")


def key_of(path_or_url: str) -> str | None:
    """``files/…`` key of a CDN URL or path of this emulator (``/cdn/files/…`` or fal's own ``/files/…``)."""
    path = urlsplit(path_or_url).path if "://" in path_or_url else path_or_url
    path = "/" + path.lstrip("/")
    for prefix in ("/cdn/files/", "/files/"):
        if path.startswith(prefix):
            return path[len(prefix) - len("files/") :]
    return None


def parse_lifecycle(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """fal's object-lifecycle preference (``X-Fal-Object-Lifecycle[-Preference]``); StorageError if not JSON."""
    raw = headers.get("x-fal-object-lifecycle") or headers.get("x-fal-object-lifecycle-preference")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StorageError(400, "Invalid X-Fal-Object-Lifecycle header: not JSON") from exc
    if not isinstance(value, dict):
        raise StorageError(400, "Invalid X-Fal-Object-Lifecycle header: expected an object")
    return value


class FileStore:
    """The emulated CDN's files, upload sessions and access tokens (one per emulator)."""

    def __init__(self, config: EmulatorConfig, *, spill_bytes: int = SPILL_BYTES) -> None:
        self.config = config
        self.spill_bytes = spill_bytes
        self.token_lifetime_seconds: float = CDN_TOKEN_SECONDS
        self.signed_url_seconds: float = SIGNED_URL_SECONDS
        self._files: dict[str, StoredFile] = {}
        self._tokens: dict[str, float] = {}  # token → expiry (epoch seconds)
        self._multipart: dict[str, _Multipart] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._secret = secrets.token_bytes(32)
        self._dir: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- files ---------------------------------------------------------------------------------

    def temp_path(self) -> Path:
        """A fresh file name in the store's private temp directory (created on first use)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="fal-emulator-files-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir / uuid.uuid4().hex

    @property
    def temp_dir(self) -> Path | None:
        """Where spilled files live (created on first spill; removed by :meth:`close`)."""
        return self._dir

    def close(self) -> None:
        """Forget every file and remove the temp directory."""
        self._files.clear()
        self._multipart.clear()
        self._reservations.clear()
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None

    def new_key(self, file_name: str | None, content_type: str) -> str:
        """A fresh ``files/b/<hex>/<id>_<name>`` key, like fal's v3 CDN URLs."""
        file_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))
        return f"files/b/{secrets.token_hex(4)}/{file_id}_{sanitize_file_name(file_name, content_type)}"

    def _expiry(self, lifecycle: Mapping[str, Any] | None) -> float | None:
        seconds = (lifecycle or {}).get("expiration_duration_seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
            return time.time() + self.config.scaled(seconds)
        return None

    def _save(self, key: str, blob: Blob, content_type: str, etag: str, expires_at: float | None) -> StoredFile:
        if (old := self._files.get(key)) is not None:
            old.blob.remove()
        file_name = key.rsplit("/", 1)[-1].split("_", 1)[-1]
        stored = StoredFile(key, content_type or DEFAULT_CONTENT_TYPE, file_name, blob, etag, expires_at=expires_at)
        self._files[key] = stored
        return stored

    def put(
        self,
        data: bytes,
        content_type: str,
        file_name: str | None = None,
        *,
        lifecycle: Mapping[str, Any] | None = None,
    ) -> str:
        """Store ``data``; return its path ``/cdn/files/b/<hex>/<id>_<name>``."""
        blob = Blob(size=len(data), data=data)
        if len(data) > self.spill_bytes:
            path = self.temp_path()
            path.write_bytes(data)
            blob = Blob(size=len(data), disk_path=path)
        key = self.new_key(file_name, content_type)
        return self._save(key, blob, content_type, f'"{uuid.uuid4().hex}"', self._expiry(lifecycle)).path

    async def put_stream(
        self,
        chunks: AsyncIterable[bytes],
        content_type: str,
        file_name: str | None = None,
        *,
        max_bytes: int | None = None,
        lifecycle: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> str:
        """Store a streamed body without holding it in memory; :class:`UploadTooLarge` past ``max_bytes``."""
        key = key or self.new_key(file_name, content_type)
        return await self._save_stream(key, chunks, content_type, self._expiry(lifecycle), max_bytes=max_bytes)

    async def _save_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        content_type: str,
        expires_at: float | None,
        *,
        max_bytes: int | None = None,
    ) -> str:
        sink = _Sink(self, max_bytes=max_bytes)
        try:
            async for chunk in chunks:
                await sink.write(chunk)
            blob = await sink.finish()
        except BaseException:
            sink.discard()
            raise
        return self._save(key, blob, content_type, sink.etag, expires_at).path

    def get(self, path_or_url: str) -> StoredFile | None:
        """The stored file at a CDN path, key or URL; None if unknown or expired."""
        key = key_of(path_or_url) if not path_or_url.startswith("files/") else path_or_url
        stored = self._files.get(key) if key else None
        if stored is not None and stored.expires_at is not None and time.time() >= stored.expires_at:
            del self._files[stored.key]
            stored.blob.remove()
            return None
        return stored

    async def read_url(self, url: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a file URL of this emulator, whatever host it names; else None.

        A spilled file is read in a worker thread: a large input must not stall the event loop.
        """
        stored = self.get(url)
        if stored is None:
            return None
        data = stored.blob.data
        if data is None:
            data = await anyio.to_thread.run_sync(stored.blob.read_bytes)
        return data, stored.content_type

    # -- CDN tokens ------------------------------------------------------------------------------

    def issue_token(self) -> tuple[str, float, float]:
        """(token, created_at, expires_at) of a new CDN upload token."""
        now = time.time()
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + self.token_lifetime_seconds
        return token, now, self._tokens[token]

    def check_token(self, authorization: str) -> str | None:
        """Why an ``Authorization: Bearer <token>`` header may not upload (None when it may)."""
        scheme, _, token = authorization.strip().partition(" ")
        expires_at = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires_at is None:
            return "Invalid or missing CDN token"
        if time.time() >= expires_at:
            return "CDN token expired"
        return None

    # -- signed URLs (REST-initiated uploads) ----------------------------------------------------

    def signed_query(self, upload_id: str) -> str:
        expires = int(time.time() + self.signed_url_seconds)
        signature = hmac.new(self._secret, f"{upload_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return urlencode({"expires": expires, "signature": signature})

    def check_signature(self, upload_id: str, query: Mapping[str, str]) -> str | None:
        """Why a signed upload URL is not valid (None when it is)."""
        expires, signature = query.get("expires", ""), query.get("signature", "")
        expected = hmac.new(self._secret, f"{upload_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        if not expires.isdigit() or not hmac.compare_digest(expected, signature):
            return "Invalid signature"
        if time.time() >= int(expires):
            return "Signed URL expired"
        return None

    def reserve(self, file_name: str | None, content_type: str, lifecycle: Mapping[str, Any] | None) -> tuple[str, str]:
        """(upload id, file key) for a single signed PUT."""
        upload_id = uuid.uuid4().hex
        key = self.new_key(file_name, content_type)
        self._reservations[upload_id] = _Reservation(key, content_type, self._expiry(lifecycle))
        return upload_id, key

    async def put_reserved(self, upload_id: str, chunks: AsyncIterable[bytes], content_type: str | None) -> str:
        reservation = self._reservations.get(upload_id)
        if reservation is None:
            raise StorageError(404, "Upload not found")
        return await self._save_stream(
            reservation.key, chunks, content_type or reservation.content_type, reservation.expires_at
        )

    # -- multipart -------------------------------------------------------------------------------

    def start_multipart(
        self, file_name: str | None, content_type: str, lifecycle: Mapping[str, Any] | None
    ) -> tuple[str, str]:
        """(upload id, file key) of a new multipart upload."""
        upload_id = uuid.uuid4().hex
        key = self.new_key(file_name, content_type)
        self._multipart[upload_id] = _Multipart(upload_id, key, content_type, self._expiry(lifecycle))
        return upload_id, key

    def multipart(self, upload_id: str, key: str | None = None) -> _Multipart:
        upload = self._multipart.get(upload_id)
        if upload is None or (key is not None and upload.key != key):
            raise StorageError(404, "Multipart upload not found")
        return upload

    async def put_part(self, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]) -> str:
        """Store one part (parts may come in any order, concurrently, or again); return its ETag."""
        upload = self.multipart(upload_id)
        if not 1 <= part_number <= 10_000:
            raise StorageError(400, "partNumber must be between 1 and 10000")
        sink = _Sink(self, digest=True)
        try:
            async for chunk in chunks:
                await sink.write(chunk)
            blob = await sink.finish()
        except BaseException:
            sink.discard()
            raise
        if (old := upload.parts.get(part_number)) is not None:
            old[0].remove()
        upload.parts[part_number] = (blob, sink.etag)
        return sink.etag

    async def complete_multipart(self, upload_id: str, parts: Any) -> str:
        """Join the listed parts in part-number order into the file; 400 on a missing part or wrong ETag."""
        upload = self.multipart(upload_id)
        wanted = _parse_parts(parts)
        for number, etag in wanted:
            if number not in upload.parts:
                raise StorageError(400, f"Part {number} was not uploaded")
            if upload.parts[number][1].strip('"') != etag.strip('"'):
                raise StorageError(400, f"ETag mismatch for part {number}")
        sink = _Sink(self)
        try:
            for number, _ in wanted:
                async for chunk in upload.parts[number][0].chunks():
                    await sink.write(chunk)
            blob = await sink.finish()
        except BaseException:
            sink.discard()
            raise
        del self._multipart[upload_id]
        for part, _ in upload.parts.values():
            part.remove()
        return self._save(upload.key, blob, upload.content_type, sink.etag, upload.expires_at).path


def _parse_parts(parts: Any) -> list[tuple[int, str]]:
    if not isinstance(parts, list) or not parts:
        raise StorageError(400, "parts must be a non-empty list of {partNumber, etag}")
    wanted: dict[int, str] = {}
    for entry in parts:
        number = entry.get("partNumber") if isinstance(entry, dict) else None
        etag = entry.get("etag") if isinstance(entry, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise StorageError(400, "each part needs an integer partNumber and a string etag")
        if number in wanted:
            raise StorageError(400, f"Part {number} listed twice")
        wanted[number] = etag
    return sorted(wanted.items())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _detail(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise StorageError(400, "Body must be JSON") from exc
    if not isinstance(body, dict):
        raise StorageError(400, "Body must be a JSON object")
    return body


def _storage_type(request: Request) -> None:
    if request.query_params.get("storage_type", STORAGE_TYPE) != STORAGE_TYPE:
        raise StorageError(400, "Invalid storage type")


def _content_type(request: Request) -> str:
    return request.headers.get("content-type") or DEFAULT_CONTENT_TYPE


def _handles_storage_errors(handler: Any) -> Any:
    """Turn :class:`StorageError` / :class:`UploadTooLarge` into fal's ``{"detail": …}`` answers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except StorageError as exc:
            return _detail(exc.status_code, exc.detail)
        except UploadTooLarge as exc:
            return _detail(413, f"File too large: {exc}")

    return endpoint


def rest_routes(state: EmulatorState) -> list[BaseRoute]:
    """The REST host (rest.fal.ai): CDN tokens, signed-upload initiation, realtime tokens, webhook JWKS."""
    store: FileStore = state.files

    async def cdn_token(request: Request) -> Response:
        if (denied := state.auth_error(request)) is not None:
            return denied
        _storage_type(request)
        token, created_at, expires_at = store.issue_token()
        return JSONResponse(
            {
                "token": token,
                "token_type": "Bearer",
                "base_url": state.public_base(request, "cdn"),
                "created_at": _iso(created_at),
                "expires_at": _iso(expires_at),
            }
        )

    async def initiate(request: Request) -> Response:
        if (denied := state.auth_error(request)) is not None:
            return denied
        _storage_type(request)
        body = await _json_object(request)
        content_type = str(body.get("content_type") or DEFAULT_CONTENT_TYPE)
        lifecycle = parse_lifecycle(request.headers)
        cdn = state.public_base(request, "cdn")
        if request.url.path.endswith("-multipart"):
            upload_id, key = store.start_multipart(body.get("file_name"), content_type, lifecycle)
            upload_url = f"{cdn}/upload/multipart/{upload_id}?{store.signed_query(upload_id)}"
        else:
            upload_id, key = store.reserve(body.get("file_name"), content_type, lifecycle)
            upload_url = f"{cdn}/upload/{upload_id}?{store.signed_query(upload_id)}"
        return JSONResponse({"upload_url": upload_url, "file_url": f"{cdn}/{key}"})

    return [
        Route("/storage/auth/token", _handles_storage_errors(cdn_token), methods=["POST"]),
        Route("/storage/upload/initiate", _handles_storage_errors(initiate), methods=["POST"]),
        Route("/storage/upload/initiate-multipart", _handles_storage_errors(initiate), methods=["POST"]),
        *realtime.rest_routes(state),
        *webhooks.rest_routes(state),
    ]


def cdn_routes(state: EmulatorState) -> list[BaseRoute]:
    """The CDN host (v3.fal.media): token-authenticated uploads, signed uploads, and public file serving."""
    store: FileStore = state.files

    def token_error(request: Request) -> Response | None:
        if not state.config.require_auth:
            return None
        reason = store.check_token(request.headers.get("authorization", ""))
        return _detail(401, reason) if reason else None

    def signature_error(request: Request) -> Response | None:
        reason = store.check_signature(request.path_params["upload_id"], request.query_params)
        return _detail(403, reason) if reason else None

    def part_number(request: Request) -> int:
        raw = request.path_params["part_number"]
        if not raw.isdigit():
            raise StorageError(400, "partNumber must be a positive integer")
        return int(raw)

    async def upload(request: Request) -> Response:
        if (denied := token_error(request)) is not None:
            return denied
        limit = state.config.max_single_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _detail(413, f"File too large: {declared} bytes exceeds the {limit}-byte single-upload limit")
        path = await store.put_stream(
            request.stream(),
            _content_type(request),
            request.headers.get("x-fal-file-name"),
            max_bytes=limit,
            lifecycle=parse_lifecycle(request.headers),
        )
        return JSONResponse({"access_url": state.public_base(request) + path, "uploaded": True})

    async def multipart_create(request: Request) -> Response:
        if (denied := token_error(request)) is not None:
            return denied
        upload_id, key = store.start_multipart(
            request.headers.get("x-fal-file-name"), _content_type(request), parse_lifecycle(request.headers)
        )
        return JSONResponse({"access_url": f"{state.public_base(request, 'cdn')}/{key}", "uploadId": upload_id})

    async def multipart_part(request: Request) -> Response:
        if (denied := token_error(request)) is not None:
            return denied
        upload_id = request.path_params["upload_id"]
        store.multipart(upload_id, "files/" + request.path_params["key"])
        number = part_number(request)
        etag = await store.put_part(upload_id, number, request.stream())
        return JSONResponse({"partNumber": number, "etag": etag}, headers={"ETag": etag})

    async def multipart_complete(request: Request) -> Response:
        if (denied := token_error(request)) is not None:
            return denied
        upload_id = request.path_params["upload_id"]
        store.multipart(upload_id, "files/" + request.path_params["key"])
        body = await _json_object(request)
        path = await store.complete_multipart(upload_id, body.get("parts"))
        return JSONResponse({"access_url": state.public_base(request) + path, "uploaded": True})

    async def signed_put(request: Request) -> Response:
        if (denied := signature_error(request)) is not None:
            return denied
        path = await store.put_reserved(
            request.path_params["upload_id"], request.stream(), request.headers.get("content-type")
        )
        stored = store.get(path)
        return Response(status_code=200, headers={"ETag": stored.etag if stored else ""})

    async def signed_part(request: Request) -> Response:
        if (denied := signature_error(request)) is not None:
            return denied
        number = part_number(request)
        etag = await store.put_part(request.path_params["upload_id"], number, request.stream())
        return JSONResponse({"partNumber": number, "etag": etag}, headers={"ETag": etag})

    async def signed_complete(request: Request) -> Response:
        if (denied := signature_error(request)) is not None:
            return denied
        body = await _json_object(request)
        path = await store.complete_multipart(request.path_params["upload_id"], body.get("parts"))
        return JSONResponse({"file_url": state.public_base(request) + path})

    async def serve(request: Request) -> Response:
        stored = store.get("files/" + request.path_params["key"])
        if stored is None:
            return _detail(404, "File not found")
        headers = {
            "Content-Type": stored.content_type,  # verbatim: no charset added
            "Content-Length": str(stored.size),
            "ETag": stored.etag,
            "Cache-Control": "public, max-age=31536000",
            "Last-Modified": datetime.fromtimestamp(stored.created_at, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return StreamingResponse(stored.blob.chunks(), headers=headers)

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, _handles_storage_errors(handler), methods=[method])

    return [
        route("/files/upload", upload, "POST"),
        route("/files/upload/multipart", multipart_create, "POST"),
        route("/files/{key:path}/multipart/{upload_id}/complete", multipart_complete, "POST"),
        route("/files/{key:path}/multipart/{upload_id}/{part_number}", multipart_part, "PUT"),
        route("/upload/multipart/{upload_id}/complete", signed_complete, "POST"),
        route("/upload/multipart/{upload_id}/{part_number}", signed_part, "PUT"),
        route("/upload/{upload_id}", signed_put, "PUT"),
        Route("/files/{key:path}", _handles_storage_errors(serve), methods=["GET", "HEAD"]),
    ]
