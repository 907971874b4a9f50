"""StorageAPI against the emulator's CDN over real loopback HTTP: tokens, single and multipart uploads, memory."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal._http import FalHTTP
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.errors import FalError, PayloadTooLargeError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.storage import (
    DataURLTooLargeError,
    ObjectLifecycle,
    StorageAPI,
    encode_data_url,
    encode_path_as_data_url,
)
from tests.fal.conftest import FAST_RETRY, TEST_KEY, MakeEmulator

KiB = 1024
MiB = 1024 * KiB


@asynccontextmanager
async def make_http(base_url: str, **client_options: Any) -> AsyncIterator[FalHTTP]:
    """A FalHTTP for the emulator at ``base_url`` with the test key; ``client_options`` make its own pool."""
    client = httpx2.AsyncClient(timeout=30.0, **client_options) if client_options else None
    http = FalHTTP(
        hosts=FalHosts.for_base_url(base_url),
        credentials=credentials_from_key(TEST_KEY, source="test"),
        retry=FAST_RETRY,
        http_client=client,
    )
    try:
        yield http
    finally:
        await http.aclose()
        if client is not None:
            await client.aclose()


@pytest.fixture
async def http(emulator: EmulatorServer) -> AsyncIterator[FalHTTP]:
    async with make_http(emulator.base_url) as client:
        yield client


async def download(http: FalHTTP, url: str) -> httpx2.Response:
    response = await http.client.get(url)
    response.raise_for_status()
    return response


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


class Clock:
    """An injectable wall clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# -- single uploads -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_upload_path_round_trips_byte_identical(http: FalHTTP, tmp_path: Path) -> None:
    source = tmp_path / "cat photo.png"
    data = write_random(source, 3 * MiB + 17)
    storage = StorageAPI(http)

    uploaded = await storage.upload_path(source)

    assert uploaded.size == len(data)
    assert uploaded.content_type == "image/png"
    assert uploaded.file_name == "cat photo.png"
    assert uploaded.url.startswith(http.hosts.cdn + "/files/")
    response = await download(http, uploaded.url)
    assert response.content == data
    assert response.headers["content-type"].startswith("image/png")


@pytest.mark.anyio
async def test_upload_of_empty_file_and_unknown_extension(http: FalHTTP, tmp_path: Path) -> None:
    source = tmp_path / "nothing.weird-ext"
    source.write_bytes(b"")

    uploaded = await StorageAPI(http).upload_path(source)

    assert uploaded.size == 0
    assert uploaded.content_type == "application/octet-stream"
    assert (await download(http, uploaded.url)).content == b""


@pytest.mark.anyio
async def test_explicit_name_and_type_and_non_ascii_name(http: FalHTTP, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    data = write_random(source, 1000)

    uploaded = await StorageAPI(http).upload_path(source, content_type="audio/wav", file_name="café ☕.wav")

    assert (uploaded.content_type, uploaded.file_name) == ("audio/wav", "café ☕.wav")
    response = await download(http, uploaded.url)
    assert response.content == data
    assert response.headers["content-type"].startswith("audio/wav")


@pytest.mark.anyio
async def test_upload_bytes(http: FalHTTP) -> None:
    uploaded = await StorageAPI(http).upload_bytes(b'{"a": 1}', file_name="a.json")

    assert uploaded.content_type == "application/json"
    assert (await download(http, uploaded.url)).content == b'{"a": 1}'


@pytest.mark.anyio
async def test_directory_is_refused(http: FalHTTP, tmp_path: Path) -> None:
    with pytest.raises(FalError, match="not a regular file"):
        await StorageAPI(http).upload_path(tmp_path)


# -- tokens -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_token_serves_many_uploads_even_concurrently(http: FalHTTP) -> None:
    storage = StorageAPI(http)
    results: list[str] = []

    async def one(i: int) -> None:
        results.append((await storage.upload_bytes(f"file {i}".encode(), "text/plain", f"{i}.txt")).url)

    async with anyio.create_task_group() as group:
        for i in range(6):
            group.start_soon(one, i)
    await storage.upload_bytes(b"later", "text/plain", "later.txt")

    assert len(set(results)) == 6
    assert storage.token_requests == 1


@pytest.mark.anyio
async def test_token_is_renewed_when_it_is_about_to_expire(http: FalHTTP) -> None:
    clock = Clock()
    storage = StorageAPI(http, clock=clock)
    await storage.upload_bytes(b"one", "text/plain")
    first = await storage.token()

    clock.now = first.expires_at - 30  # inside the refresh margin (60 s before expiry)
    await storage.upload_bytes(b"two", "text/plain")

    assert storage.token_requests == 2
    assert (await storage.token()).token != first.token


@pytest.mark.anyio
async def test_token_the_cdn_rejects_is_renewed_once(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.files.token_lifetime_seconds = 0.3
    async with make_http(server.base_url) as http:
        clock = Clock()  # frozen: the client believes its token is still good
        storage = StorageAPI(http, clock=clock)
        await storage.upload_bytes(b"one", "text/plain")
        await anyio.sleep(0.4)  # the emulator now answers 401 "CDN token expired"

        uploaded = await storage.upload_bytes(b"two", "text/plain")

        assert (await download(http, uploaded.url)).content == b"two"
        assert storage.token_requests == 2


@pytest.mark.anyio
async def test_upload_without_key_says_how_to_fix(emulator: EmulatorServer) -> None:
    async with FalHTTP(hosts=FalHosts.for_base_url(emulator.base_url), credentials=None) as http:
        with pytest.raises(FalError, match="FAL_KEY"):
            await StorageAPI(http).upload_bytes(b"x", "text/plain")


# -- limits and lifecycle -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_413_from_the_cdn_is_payload_too_large(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    server = make_emulator(max_single_upload_bytes=64 * KiB)
    source = tmp_path / "big.bin"
    write_random(source, 200 * KiB)
    async with make_http(server.base_url) as http:
        with pytest.raises(PayloadTooLargeError) as caught:
            await StorageAPI(http).upload_path(source)
    assert caught.value.status_code == 413


@pytest.mark.anyio
async def test_lifecycle_header_reaches_the_cdn(http: FalHTTP) -> None:
    # The emulator scales lifetimes by its time scale (0.02): 1 s of lifetime is 20 ms here.
    storage = StorageAPI(http)
    uploaded = await storage.upload_bytes(b"short-lived", "text/plain", lifecycle=ObjectLifecycle.expires_in(1))
    kept = await storage.upload_bytes(b"kept", "text/plain", lifecycle=ObjectLifecycle.expires_in("1d"))
    await anyio.sleep(0.1)

    assert (await http.client.get(uploaded.url)).status_code == 404
    assert (await download(http, kept.url)).content == b"kept"


def test_lifecycle_names_map_like_fal_client() -> None:
    assert ObjectLifecycle.expires_in("1h").header_value() == '{"expiration_duration_seconds":3600}'
    assert ObjectLifecycle.expires_in("never").header_value() == "{}"
    with pytest.raises(ValueError):
        ObjectLifecycle.expires_in("2h")
    with pytest.raises(ValueError):
        ObjectLifecycle.expires_in(0)


# -- multipart ----------------------------------------------------------------------------------


class InFlight:
    """Counts concurrent part PUTs with httpx2 event hooks (request sent … response headers received)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.parts = 0

    async def on_request(self, request: httpx2.Request) -> None:
        if request.method == "PUT" and "/multipart/" in request.url.path:
            self.parts += 1
            self.current += 1
            self.peak = max(self.peak, self.current)

    async def on_response(self, response: httpx2.Response) -> None:
        if response.request.method == "PUT" and "/multipart/" in response.request.url.path:
            self.current -= 1


@pytest.mark.anyio
async def test_multipart_sends_parts_in_parallel_with_bounded_concurrency(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    server = make_emulator()
    server.state.faults.add("slow", role="cdn", method="PUT", path="/multipart/", delay_seconds=0.05)
    source = tmp_path / "video.mp4"
    data = write_random(source, 10 * 100 * KiB + 1234)  # 11 parts of 100 KiB
    tracker = InFlight()
    hooks = {"request": [tracker.on_request], "response": [tracker.on_response]}
    async with make_http(server.base_url, event_hooks=hooks) as http:
        storage = StorageAPI(http, multipart_threshold=256 * KiB, part_size=100 * KiB, concurrency=3)

        uploaded = await storage.upload_path(source)

        assert (uploaded.size, uploaded.content_type) == (len(data), "video/mp4")
        assert (await download(http, uploaded.url)).content == data
    assert tracker.parts == 11
    assert tracker.peak == 3


@pytest.mark.anyio
async def test_failed_part_is_retried_alone(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    server = make_emulator()
    server.state.faults.add("503", count=2, role="cdn", method="PUT", path="/multipart/.*/3$")
    source = tmp_path / "parts.bin"
    data = write_random(source, 5 * 64 * KiB)
    async with make_http(server.base_url) as http:
        storage = StorageAPI(http, multipart_threshold=64 * KiB, part_size=64 * KiB)

        uploaded = await storage.upload_path(source)

        assert (await download(http, uploaded.url)).content == data
        # token + create + 5 parts + 2 retries of part 3 + complete
        assert http.requests_sent == 1 + 1 + 5 + 2 + 1


@pytest.mark.anyio
async def test_multipart_upload_bytes(http: FalHTTP) -> None:
    data = os.urandom(300 * KiB)
    storage = StorageAPI(http, multipart_threshold=100 * KiB, part_size=64 * KiB)

    uploaded = await storage.upload_bytes(data, "application/zip", "images.zip")

    assert (await download(http, uploaded.url)).content == data


# -- streams ------------------------------------------------------------------------------------


async def chunks_of(data: bytes, size: int = 7 * KiB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("length", "declared"),
    [
        (10 * KiB, True),  # ≤ part size: buffered, sent as bytes
        (150 * KiB, True),  # ≤ threshold: one streamed request
        (700 * KiB, True),  # > threshold: multipart from the stream
        (700 * KiB, False),  # unknown size: multipart from the stream
        (20 * KiB, False),  # unknown size that fits one part: single upload
    ],
)
async def test_upload_stream(http: FalHTTP, length: int, declared: bool) -> None:
    data = os.urandom(length)
    storage = StorageAPI(http, multipart_threshold=256 * KiB, part_size=64 * KiB)

    uploaded = await storage.upload_stream(chunks_of(data), len(data) if declared else None, file_name="clip.mp3")

    assert (uploaded.size, uploaded.content_type) == (length, "audio/mpeg")
    assert (await download(http, uploaded.url)).content == data


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [10 * KiB, 150 * KiB, 700 * KiB])
async def test_upload_stream_refuses_a_size_mismatch(http: FalHTTP, declared: int) -> None:
    storage = StorageAPI(http, multipart_threshold=256 * KiB, part_size=64 * KiB)
    with pytest.raises(FalError, match="declared"):
        await storage.upload_stream(chunks_of(os.urandom(declared + 5000)), declared)
    with pytest.raises(FalError, match="declared"):
        await storage.upload_stream(chunks_of(os.urandom(declared - 5000)), declared)


# -- data URLs ----------------------------------------------------------------------------------


def test_encode_data_url() -> None:
    url = encode_data_url(b"\x89PNG\r\n", "image/png")
    assert url == "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n").decode()


@pytest.mark.anyio
async def test_encode_path_as_data_url_has_a_size_limit(tmp_path: Path) -> None:
    small = tmp_path / "small.jpg"
    small.write_bytes(b"jpeg-bytes")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2049)

    assert await encode_path_as_data_url(small) == encode_data_url(b"jpeg-bytes", "image/jpeg")
    with pytest.raises(DataURLTooLargeError, match="upload"):
        await encode_path_as_data_url(big, max_bytes=2048)


# -- memory ------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """The process's peak resident memory while a block runs (sampled every 5 ms in a thread)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def big_file(tmp_path: Path) -> Iterator[Path]:
    """A 300 MiB file of generated content (sparse except for a marker every 10 MiB)."""
    path = tmp_path / "big.bin"
    with path.open("wb") as handle:
        handle.truncate(300 * MiB)
        for offset in range(0, 300 * MiB, 10 * MiB):
            handle.seek(offset)
            handle.write(f"part at {offset}".encode())
    yield path
    path.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def emulator_process() -> Iterator[str]:
    """An emulator in a child process, so this process's memory is the client's alone."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"import anyio; from fal_mcp.emulator.server import serve; anyio.run(serve, '127.0.0.1', {port})"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator process did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(timeout=10)


@pytest.mark.anyio
async def test_multipart_upload_of_300_mib_keeps_memory_flat(
    emulator_process: str, big_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_http(emulator_process) as http:
        storage = StorageAPI(http)  # defaults: 90 MiB threshold, 10 MiB parts, 4 in parallel
        await storage.token()  # warm up the pool and the token before measuring
        before = _rss_bytes()
        with RssSampler() as sampler:
            uploaded = await storage.upload_path(big_file)
        growth = sampler.peak - before

        assert uploaded.size == 300 * MiB
        digest = hashlib.sha256()
        async with http.client.stream("GET", uploaded.url) as response:
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == _sha256_file(big_file)
    with capsys.disabled():
        print(f"\n[memory] 300 MiB multipart upload: client peak RSS growth {growth / MiB:.1f} MiB")
    assert growth < 64 * MiB
