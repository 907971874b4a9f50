"""The emulated storage over real HTTP: CDN tokens, single and multipart uploads, signed uploads, serving."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import fal_client
import fal_client.client as fal_client_module
import httpx
import httpx2
import pytest
from fal_client.auth import AuthCredentials

from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import AUTH, MakeEmulator, client_for

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


async def cdn_token(http: httpx2.AsyncClient) -> dict[str, Any]:
    response = await http.post("/rest/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"{token['token_type']} {token['token']}"}


async def test_token_upload_and_serve_back(client: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    token = await cdn_token(client)
    assert token["token_type"] == "Bearer"
    assert token["base_url"] == f"{emulator.base_url}/cdn"
    assert token["created_at"] < token["expires_at"]
    data = os.urandom(300_000)
    response = await client.post(
        "/cdn/files/upload",
        content=data,
        headers={**bearer(token), "Content-Type": "image/png", "X-Fal-File-Name": "my picture.png"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["uploaded"] is True
    assert body["access_url"].startswith(f"{emulator.base_url}/cdn/files/b/")
    assert body["access_url"].endswith("_my_picture.png")

    served = await client.get(body["access_url"], headers={"Authorization": ""})
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-length"] == str(len(data))
    head = await client.head(body["access_url"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))

    path = urlsplit(body["access_url"]).path
    assert (await client.get(path + "x")).status_code == 404
    # The store finds a file by path whatever host names it (fal's own CDN hosts included).
    assert await emulator.state.files.read_url("https://v3b.fal.media" + path.removeprefix("/cdn")) == (
        data,
        "image/png",
    )


async def test_official_client_uploads(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """fal_client's own upload code (CDN token + v3 upload; multipart with small parts) against the emulator."""
    monkeypatch.setattr(fal_client_module, "REST_URL", f"{emulator.base_url}/rest")
    monkeypatch.setattr(fal_client_module, "CDN_URL", f"{emulator.base_url}/cdn")
    client = fal_client.AsyncClient(key="test-key-id:test-key-secret")
    data = os.urandom(200_000)
    try:
        url = await client.upload(data, "application/octet-stream", "blob.bin")
    finally:
        await (await client._client).aclose()  # fal_client has no public close
    async with httpx2.AsyncClient() as http:
        assert (await http.get(url)).content == data

    big = os.urandom(5 * 64 * 1024 + 123)
    token_manager = fal_client_module.AsyncCDNTokenManager(AuthCredentials("Key", "test-key-id:test-key-secret"))
    async with httpx.AsyncClient() as http1:
        url = await fal_client_module.AsyncMultipartUpload.save(
            client=http1,
            token_manager=token_manager,
            file_name="video.mp4",
            data=big,
            content_type="video/mp4",
            chunk_size=64 * 1024,
            max_concurrency=6,
        )
    async with httpx2.AsyncClient() as http:
        served = await http.get(url)
    assert served.content == big
    assert served.headers["content-type"] == "video/mp4"


async def test_multipart_parts_out_of_order_and_in_parallel(client: httpx2.AsyncClient) -> None:
    token = await cdn_token(client)
    created = await client.post(
        "/cdn/files/upload/multipart",
        headers={**bearer(token), "Content-Type": "application/zip", "X-Fal-File-Name": "archive.zip"},
    )
    assert created.status_code == 200, created.text
    access_url, upload_id = created.json()["access_url"], created.json()["uploadId"]
    parts = [os.urandom(size) for size in (70_000, 70_000, 70_000, 70_000, 1_234)]
    etags: dict[int, str] = {}

    async def put(number: int) -> None:
        await anyio.sleep(random.random() / 100)
        response = await client.put(
            f"{access_url}/multipart/{upload_id}/{number}", content=parts[number - 1], headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"partNumber": number, "etag": response.headers["etag"]}
        etags[number] = response.headers["etag"]

    async with anyio.create_task_group() as tasks:
        for number in (5, 3, 1, 4, 2):
            tasks.start_soon(put, number)
    listed = [{"partNumber": n, "etag": etags[n]} for n in (4, 2, 5, 1, 3)]  # any order: joined by number
    done = await client.post(
        f"{access_url}/multipart/{upload_id}/complete", json={"parts": listed}, headers=bearer(token)
    )
    assert done.status_code == 200, done.text
    served = await client.get(access_url)
    assert served.content == b"".join(parts)
    assert served.headers["content-type"] == "application/zip"
    # Completing again: the upload is gone.
    again = await client.post(
        f"{access_url}/multipart/{upload_id}/complete", json={"parts": listed}, headers=bearer(token)
    )
    assert again.status_code == 404


async def test_multipart_wrong_etag_or_missing_part_is_400(client: httpx2.AsyncClient) -> None:
    token = await cdn_token(client)
    created = (await client.post("/cdn/files/upload/multipart", headers=bearer(token))).json()
    base = f"{created['access_url']}/multipart/{created['uploadId']}"
    first = await client.put(f"{base}/1", content=b"a" * 1000, headers=bearer(token))
    etag = first.headers["etag"]

    wrong = await client.post(
        f"{base}/complete", json={"parts": [{"partNumber": 1, "etag": '"0000"'}]}, headers=bearer(token)
    )
    assert wrong.status_code == 400
    assert "ETag" in wrong.json()["detail"]
    missing = await client.post(
        f"{base}/complete",
        json={"parts": [{"partNumber": 1, "etag": etag}, {"partNumber": 2, "etag": etag}]},
        headers=bearer(token),
    )
    assert missing.status_code == 400
    assert "Part 2" in missing.json()["detail"]
    assert (await client.get(created["access_url"])).status_code == 404  # nothing assembled
    ok = await client.post(f"{base}/complete", json={"parts": [{"partNumber": 1, "etag": etag}]}, headers=bearer(token))
    assert ok.status_code == 200
    assert (await client.get(created["access_url"])).content == b"a" * 1000


async def test_single_upload_over_the_limit_is_413(make_emulator: MakeEmulator) -> None:
    server = make_emulator(max_single_upload_bytes=MiB)
    async with client_for(server) as http:
        token = await cdn_token(http)
        exact = await http.post("/cdn/files/upload", content=b"x" * MiB, headers=bearer(token))
        assert exact.status_code == 200
        too_big = await http.post("/cdn/files/upload", content=b"x" * (MiB + 1), headers=bearer(token))
        assert too_big.status_code == 413

        async def unsized() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
            for _ in range(3):
                yield b"y" * (MiB // 2)

        streamed = await http.post("/cdn/files/upload", content=unsized(), headers=bearer(token))
        assert streamed.status_code == 413


async def test_cdn_tokens_are_checked(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.files.token_lifetime_seconds = 0.3
    async with client_for(server) as http:
        token = await cdn_token(http)
        assert (await http.post("/cdn/files/upload", content=b"ok", headers=bearer(token))).status_code == 200
        bogus = await http.post("/cdn/files/upload", content=b"no", headers={"Authorization": "Bearer nope"})
        assert bogus.status_code == 401
        no_key = await http.post("/rest/storage/auth/token", json={}, headers={"Authorization": ""})
        assert no_key.status_code == 401
        assert no_key.json() == {"detail": "invalid key credentials"}
        await anyio.sleep(0.35)
        expired = await http.post("/cdn/files/upload", content=b"late", headers=bearer(token))
        assert expired.status_code == 401
        assert "expired" in expired.json()["detail"]


async def test_initiate_and_signed_put(client: httpx2.AsyncClient, emulator: EmulatorServer) -> None:
    init = await client.post(
        "/rest/storage/upload/initiate",
        params={"storage_type": "fal-cdn-v3"},
        json={"file_name": "notes.txt", "content_type": "text/plain"},
    )
    assert init.status_code == 200, init.text
    upload_url, file_url = init.json()["upload_url"], init.json()["file_url"]
    assert file_url.startswith(f"{emulator.base_url}/cdn/files/b/") and file_url.endswith("_notes.txt")
    assert (await client.get(file_url)).status_code == 404  # nothing there until the PUT

    async with httpx2.AsyncClient() as anonymous:  # the signed URL needs no credentials
        put = await anonymous.put(upload_url, content=b"hello notes", headers={"Content-Type": "text/plain"})
        assert put.status_code == 200
        tampered = await anonymous.put(upload_url.replace("signature=", "signature=0"), content=b"evil")
        assert tampered.status_code == 403
        served = await anonymous.get(file_url)
    assert served.content == b"hello notes"
    assert served.headers["content-type"] == "text/plain"


async def test_gcs_storage_type_is_refused(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/rest/storage/upload/initiate", params={"storage_type": "gcs"}, json={"file_name": "a", "content_type": "b"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid storage type"}


async def test_js_style_signed_multipart(client: httpx2.AsyncClient) -> None:
    """The JS client's >90 MiB flow: PUT {origin}{pathname}/{n}{search}, JSON etag, POST …/complete{search}."""
    init = await client.post(
        "/rest/storage/upload/initiate-multipart",
        params={"storage_type": "fal-cdn-v3"},
        json={"file_name": "clip.mp4", "content_type": "video/mp4"},
    )
    assert init.status_code == 200, init.text
    upload = urlsplit(init.json()["upload_url"])
    origin = f"{upload.scheme}://{upload.netloc}"
    chunks = [os.urandom(50_000), os.urandom(50_000), os.urandom(7)]
    parts = []
    async with httpx2.AsyncClient() as anonymous:
        for number, chunk in enumerate(chunks, start=1):
            put = await anonymous.put(f"{origin}{upload.path}/{number}?{upload.query}", content=chunk)
            assert put.status_code == 200, put.text
            assert put.json()["etag"] == put.headers["etag"]
            parts.append({"partNumber": put.json()["partNumber"], "etag": put.json()["etag"]})
        done = await anonymous.post(f"{origin}{upload.path}/complete?{upload.query}", json={"parts": parts})
        assert done.status_code == 200, done.text
        served = await anonymous.get(init.json()["file_url"])
    assert served.content == b"".join(chunks)
    assert served.headers["content-type"] == "video/mp4"


async def test_lifecycle_expiry_is_honoured(client: httpx2.AsyncClient) -> None:
    token = await cdn_token(client)
    uploaded = await client.post(
        "/cdn/files/upload",
        content=b"short-lived",
        headers={**bearer(token), "X-Fal-Object-Lifecycle": '{"expiration_duration_seconds": 1}'},
    )
    url = uploaded.json()["access_url"]
    assert (await client.get(url)).status_code == 200
    await anyio.sleep(0.05)  # 1 simulated second at the shared emulator's time scale (0.02)
    assert (await client.get(url)).status_code == 404
    bad = await client.post(
        "/cdn/files/upload", content=b"x", headers={**bearer(token), "X-Fal-Object-Lifecycle": "{not json"}
    )
    assert bad.status_code == 400


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def test_big_streamed_upload_does_not_sit_in_memory(make_emulator: MakeEmulator) -> None:
    """256 MiB through upload and download (server and client share this process) grows RSS by < 64 MB."""
    server = make_emulator(max_single_upload_bytes=512 * MiB)
    total, chunk = 256 * MiB, os.urandom(MiB)
    peak = baseline = _rss_bytes()
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, _rss_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // MiB):
            yield chunk

    expected = hashlib.sha256()
    for _ in range(total // MiB):
        expected.update(chunk)
    try:
        async with httpx2.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=60.0) as http:
            token = await cdn_token(http)
            headers = {**bearer(token), "Content-Type": "application/octet-stream", "Content-Length": str(total)}
            response = await http.post("/cdn/files/upload", content=body(), headers=headers)
            assert response.status_code == 200, response.text
            received = hashlib.sha256()
            async with http.stream("GET", response.json()["access_url"]) as download:
                assert download.headers["content-length"] == str(total)
                async for part in download.aiter_bytes():
                    received.update(part)
    finally:
        sampling = False
        sampler.join()
    assert received.hexdigest() == expected.hexdigest()
    assert peak - baseline < 64 * 1000 * 1000, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


def _abort_mid_body(server: EmulatorServer, method: str, path: str, headers: dict[str, str]) -> None:
    """Send the head and 2 of 4 MiB of body (enough to reach the disk), then hang up (a cancelled upload)."""
    host, port = server.host, server.port
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {4 * MiB}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, port)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + os.urandom(2 * MiB))
        time.sleep(0.05)  # let the server start reading the body


async def test_aborted_uploads_are_dropped_quietly(
    make_emulator: MakeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A client hanging up mid-body is routine: no traceback, nothing stored, nothing left on disk."""
    server = make_emulator()
    server.state.files.spill_bytes = 0  # every body goes to the temp directory at once
    async with client_for(server) as http:
        token = bearer(await cdn_token(http))
        created = await http.post(
            "/cdn/files/upload/multipart", headers={**token, "Content-Type": "video/mp4", "X-Fal-File-Name": "v.mp4"}
        )
        access_url, upload_id = created.json()["access_url"], created.json()["uploadId"]
        signed = (await http.post("/rest/storage/upload/initiate", json={"file_name": "s.bin"})).json()
        with caplog.at_level(logging.DEBUG):
            for method, url, headers in (
                ("POST", "/cdn/files/upload", token),
                ("PUT", f"{urlsplit(access_url).path}/multipart/{upload_id}/1", token),
                ("PUT", urlsplit(signed["upload_url"]).path + "?" + urlsplit(signed["upload_url"]).query, {}),
                ("POST", "/queue/emulator/strict", {**AUTH, "Content-Type": "application/json"}),
            ):
                _abort_mid_body(server, method, url, headers)
            await anyio.sleep(0.2)
            alive = await http.get("/queue/emulator/strict/requests/none/status")  # the server carries on
        assert alive.status_code == 404
        complete = await http.post(
            f"{urlsplit(access_url).path}/multipart/{upload_id}/complete",
            json={"parts": [{"partNumber": 1, "etag": "x"}]},
            headers=token,
        )
        assert (complete.status_code, complete.json()) == (400, {"detail": "Part 1 was not uploaded"})
        assert (await http.get(urlsplit(signed["file_url"]).path)).status_code == 404
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
    assert server.state.queue.requests_for("emulator/strict") == []
    assert server.state.files.temp_dir is not None and list(server.state.files.temp_dir.iterdir()) == []


async def test_shutdown_removes_stored_files(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.files.spill_bytes = 0
    async with client_for(server) as http:
        token = bearer(await cdn_token(http))
        data = os.urandom(2 * MiB)  # over one disk batch: it goes to the temp directory
        uploaded = await http.post("/cdn/files/upload", content=data, headers=token)
        assert (await http.get(uploaded.json()["access_url"])).content == data
    temp_dir = server.state.files.temp_dir
    assert temp_dir is not None and len(list(temp_dir.iterdir())) == 1
    server.stop()
    assert not temp_dir.exists()
    assert server.state.files.get(uploaded.json()["access_url"]) is None


def _open_files_under(directory: Path) -> list[str]:
    """Paths under ``directory`` this process holds open (the emulator runs in-process)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # fds come and go while we look
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)):
                found.append(target)
    return found


async def test_abandoned_downloads_close_their_file(make_emulator: MakeEmulator) -> None:
    """A client that stops reading a file from disk mid-way must not leave it open on the server."""
    server = make_emulator()
    server.state.files.spill_bytes = 0
    async with client_for(server) as http:
        uploaded = await http.post(
            "/cdn/files/upload", content=os.urandom(8 * MiB), headers=bearer(await cdn_token(http))
        )
        url = uploaded.json()["access_url"]
        temp_dir = server.state.files.temp_dir
        assert temp_dir is not None
        for _ in range(5):
            async with client_for(server) as reader, reader.stream("GET", url) as download:
                async for _chunk in download.aiter_raw():
                    break  # hang up after the first chunk
        for _ in range(50):
            if not _open_files_under(temp_dir):
                break
            await anyio.sleep(0.02)
        assert _open_files_under(temp_dir) == []
