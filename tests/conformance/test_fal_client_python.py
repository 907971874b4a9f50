"""fal's official Python client (``fal_client`` 1.0.3), unchanged, against the emulator over https/wss.

It is pointed at the emulator only the documented ways: ``FAL_RUN_HOST`` / ``FAL_QUEUE_RUN_HOST``
(read when fal_client is imported, so it is re-imported with them set), ``FAL_KEY``, the emulator's
CA through ``SSL_CERT_FILE`` (honoured by httpx and by websockets), and patches of the module
constants it hard-codes: ``REST_URL``, ``CDN_URL`` and ``MULTIPART_THRESHOLD``. Afterwards the
modules get their original namespaces back, so other tests keep the classes they imported.
"""

from __future__ import annotations

import base64
import gc
import importlib
import io
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import fal_client
import fal_client.auth
import fal_client.client
import httpx2
import pytest
from PIL import Image

from fal_mcp.emulator.server import EmulatorServer, client_env
from tests.conformance import scenarios as s

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fal(tls_emulator: EmulatorServer) -> Iterator[ModuleType]:
    """``fal_client`` as a user points it at the emulator (see the module docstring)."""
    modules = [fal_client.auth, fal_client.client, fal_client]  # in import order
    saved = [dict(vars(module)) for module in modules]
    env = client_env(tls_emulator.base_url, tls_emulator.tls)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("FAL_RUN_HOST", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE"):
            patch.setenv(name, env[name])
        patch.delenv("SSL_CERT_DIR", raising=False)
        patch.setenv("FAL_KEY", s.KEY)
        for module in modules:
            importlib.reload(module)
        patch.setattr(fal_client.client, "REST_URL", f"{tls_emulator.base_url}/rest")
        patch.setattr(fal_client.client, "CDN_URL", f"{tls_emulator.base_url}/cdn")
        yield fal_client
    for module, namespace in zip(modules, saved, strict=True):
        vars(module).clear()
        vars(module).update(namespace)


@pytest.fixture
def sync_client(fal: ModuleType) -> Iterator[Any]:
    """A ``SyncClient`` that finds its key in ``FAL_KEY``."""
    client = fal.SyncClient()
    yield client
    if "_client" in vars(client):
        client._client.close()  # fal_client has no public close


@pytest.fixture
async def async_client(fal: ModuleType) -> AsyncIterator[Any]:
    """An ``AsyncClient`` given the key explicitly."""
    client = fal.AsyncClient(key=s.KEY)
    yield client
    if "_client" in vars(client):
        await (await client._client).aclose()


@pytest.fixture
def download(tls_emulator: EmulatorServer) -> Iterator[Any]:
    """GET a URL the emulator handed out, with our own HTTP client (not fal_client's)."""
    assert tls_emulator.tls is not None
    with httpx2.Client(verify=tls_emulator.tls.client_context(), timeout=10.0) as http:

        def get(url: str) -> httpx2.Response:
            assert url.startswith(tls_emulator.base_url + "/cdn/files/"), url
            response = http.get(url)
            assert response.status_code == 200, response.text
            return response

        yield get


def messages(logs: list[dict[str, Any]] | None) -> list[str]:
    assert logs is not None
    return [entry["message"] for entry in logs]


def check_subscribe_updates(fal: ModuleType, updates: list[Any]) -> None:
    """Queued (behind the blocker) → InProgress, with log lines on the way → Completed with every line."""
    kinds = [type(update).__name__ for update in updates]
    assert kinds[0] == "Queued" and updates[0] == fal.Queued(position=0), kinds
    assert kinds[-1] == "Completed" and kinds.count("Completed") == 1
    first_progress = kinds.index("InProgress")
    assert set(kinds[:first_progress]) == {"Queued"} and set(kinds[first_progress:-1]) == {"InProgress"}
    progress_lines = [messages(update.logs) for update in updates if isinstance(update, fal.InProgress)]
    assert any(progress_lines), "no InProgress update carried log lines"
    assert all(lines == s.SUBSCRIBE.logs[: len(lines)] for lines in progress_lines)  # all lines so far, in order
    final = updates[-1]
    assert messages(final.logs) == s.SUBSCRIBE.logs
    assert final.error is None and final.error_type is None and final.metrics["inference_time"] > 0


# -- queue -------------------------------------------------------------------------------------


def test_subscribe_with_logs_and_queue_updates(fal: ModuleType, sync_client: Any, tls_emulator: EmulatorServer) -> None:
    blocker = sync_client.submit(s.BLOCKER.endpoint_id, s.BLOCKER.input)
    enqueued: list[str] = []
    updates: list[Any] = []
    result = sync_client.subscribe(
        s.SUBSCRIBE.endpoint_id,
        s.SUBSCRIBE.input,
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
        interval=0.01,
    )
    assert result == s.SUBSCRIBE.output
    check_subscribe_updates(fal, updates)
    assert len(enqueued) == 1 and uuid.UUID(enqueued[0])
    record = tls_emulator.state.queue.get(enqueued[0])
    assert record is not None and record.input == s.SUBSCRIBE.input and record.key_id == s.KEY_ID
    assert isinstance(blocker.status(), fal.Completed)


async def test_subscribe_async(fal: ModuleType, async_client: Any) -> None:
    await async_client.submit(s.BLOCKER.endpoint_id, s.BLOCKER.input)
    updates: list[Any] = []

    async def on_update(update: Any) -> None:  # fal_client awaits coroutine callbacks
        updates.append(update)

    result = await async_client.subscribe(
        s.SUBSCRIBE.endpoint_id, s.SUBSCRIBE.input, with_logs=True, on_queue_update=on_update, interval=0.01
    )
    assert result == s.SUBSCRIBE.output
    check_subscribe_updates(fal, updates)


def test_submit_status_result(fal: ModuleType, sync_client: Any) -> None:
    handle = sync_client.submit(s.QUEUE.endpoint_id, s.QUEUE.input)
    assert handle.status_url.endswith(f"/queue/emulator/strict/requests/{handle.request_id}/status")
    statuses = list(handle.iter_events(with_logs=True, interval=0.01))
    assert all(isinstance(status, fal.Queued | fal.InProgress) for status in statuses[:-1])
    assert isinstance(statuses[-1], fal.Completed) and messages(statuses[-1].logs) == s.QUEUE.logs
    assert handle.status(with_logs=False).logs is None
    assert handle.get() == s.QUEUE.output
    # The same request by id, as a later process would address it.
    by_id = sync_client.status(s.QUEUE.endpoint_id, handle.request_id, with_logs=True)
    assert isinstance(by_id, fal.Completed) and messages(by_id.logs) == s.QUEUE.logs
    assert sync_client.result(s.QUEUE.endpoint_id, handle.request_id) == s.QUEUE.output


async def test_submit_status_result_async(fal: ModuleType, async_client: Any) -> None:
    handle = await async_client.submit(s.QUEUE.endpoint_id, s.QUEUE.input)
    assert await handle.get(interval=0.01) == s.QUEUE.output
    status = await async_client.status(s.QUEUE.endpoint_id, handle.request_id, with_logs=True)
    assert isinstance(status, fal.Completed) and messages(status.logs) == s.QUEUE.logs
    assert await async_client.result(s.QUEUE.endpoint_id, handle.request_id) == s.QUEUE.output


def test_cancel_a_queued_and_a_running_request(fal: ModuleType, sync_client: Any) -> None:
    running = sync_client.submit(s.LONG.endpoint_id, s.LONG.input)
    queued = sync_client.submit(s.LONG.endpoint_id, s.LONG.input)
    assert queued.status() == fal.Queued(position=0)
    assert isinstance(running.status(), fal.InProgress)

    assert queued.cancel() is None  # fal_client returns nothing for 202 CANCELLATION_REQUESTED
    assert sync_client.cancel(s.LONG.endpoint_id, running.request_id) is None
    for handle in (queued, running):
        final = list(handle.iter_events(interval=0.01))[-1]
        assert isinstance(final, fal.Completed)
        assert (final.error, final.error_type) == (s.CANCELLED.body["detail"], "client_cancelled")
        with pytest.raises(fal.FalClientHTTPError) as cancelled:
            handle.get(interval=0.01)
        assert cancelled.value.status_code == s.CANCELLED.status_code
        assert (cancelled.value.message, cancelled.value.error_type) == (s.CANCELLED.body["detail"], "client_cancelled")
        assert cancelled.value.response.json() == s.CANCELLED.body

    with pytest.raises(fal.FalClientHTTPError) as too_late:
        running.cancel()
    assert too_late.value.status_code == s.ALREADY_COMPLETED.status_code
    assert too_late.value.response.json() == s.ALREADY_COMPLETED.body


async def test_cancel_async(fal: ModuleType, async_client: Any) -> None:
    running = await async_client.submit(s.LONG.endpoint_id, s.LONG.input)
    queued = await async_client.submit(s.LONG.endpoint_id, s.LONG.input)
    assert await queued.status() == fal.Queued(position=0)
    await async_client.cancel(s.LONG.endpoint_id, queued.request_id)
    await running.cancel()
    for handle in (queued, running):
        with pytest.raises(fal.FalClientHTTPError) as cancelled:
            await handle.get(interval=0.01)
        assert (cancelled.value.status_code, cancelled.value.error_type) == (499, "client_cancelled")


# -- run and stream ------------------------------------------------------------------------------


def check_run_output(output: dict[str, Any], download: Any) -> None:
    (image,) = output["images"]
    assert {key: image[key] for key in s.RUN_IMAGE} == s.RUN_IMAGE
    assert output["seed"] == s.RUN.input["seed"] and output["prompt"] == s.RUN.input["prompt"]
    served = download(image["url"])
    assert served.headers["content-type"] == "image/png"
    assert s.png_size(served.content) == (s.RUN_IMAGE["width"], s.RUN_IMAGE["height"])


def test_run(sync_client: Any, download: Any) -> None:
    check_run_output(sync_client.run(s.RUN.endpoint_id, s.RUN.input), download)


async def test_run_async(async_client: Any, download: Any) -> None:
    check_run_output(await async_client.run(s.RUN.endpoint_id, s.RUN.input), download)


def check_stream_events(events: list[dict[str, Any]]) -> None:
    *partials, final = events
    assert len(partials) >= 3 and all(event["partial"] is True for event in partials)
    outputs = [event["output"] for event in events]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(outputs))
    assert final == s.STREAM.output


def test_stream(sync_client: Any) -> None:
    check_stream_events(list(sync_client.stream(s.STREAM.endpoint_id, s.STREAM.input)))


async def test_stream_async(async_client: Any) -> None:
    check_stream_events([event async for event in async_client.stream(s.STREAM.endpoint_id, s.STREAM.input)])


# -- storage -------------------------------------------------------------------------------------


# fal_client 1.0.3's sync ``upload`` opens an httpx.Client per call (``_get_cdn_client``) and never
# closes it; its socket is collected here, inside the test, instead of failing a later one.
LEAKS_A_SOCKET = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


@LEAKS_A_SOCKET
def test_upload_bytes_round_trip(sync_client: Any, download: Any) -> None:
    url = sync_client.upload(s.UPLOAD_DATA, s.UPLOAD_TYPE, file_name=s.UPLOAD_NAME)
    gc.collect()
    assert url.endswith("_" + s.UPLOAD_NAME)
    served = download(url)
    assert served.content == s.UPLOAD_DATA and served.headers["content-type"] == s.UPLOAD_TYPE


async def test_upload_file_round_trip_async(async_client: Any, download: Any, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(s.UPLOAD_DATA)
    url = await async_client.upload_file(path)
    served = download(url)
    assert served.content == s.UPLOAD_DATA and served.headers["content-type"] == "text/plain"


@LEAKS_A_SOCKET
def test_upload_image(sync_client: Any, download: Any) -> None:
    url = sync_client.upload_image(Image.new("RGB", s.IMAGE_SIZE, s.IMAGE_COLOR), format="png")
    gc.collect()
    served = download(url)
    assert served.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(served.content))
    assert picture.size == s.IMAGE_SIZE and picture.convert("RGB").getpixel((5, 5)) == s.IMAGE_COLOR


@pytest.mark.parametrize("how", ["bytes", "file"])
async def test_multipart_upload(
    fal: ModuleType, async_client: Any, download: Any, tls_emulator: EmulatorServer, tmp_path: Path, how: str
) -> None:
    """Above ``MULTIPART_THRESHOLD`` fal_client uploads 10 MiB parts; the threshold is patched down to 1 MiB."""
    faults = tls_emulator.state.faults
    faults.add("slow", delay_seconds=0.0, role="cdn", path="/multipart")  # a no-op that records each request
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fal.client, "MULTIPART_THRESHOLD", s.MULTIPART_THRESHOLD)
            if how == "bytes":
                url = await async_client.upload(s.MULTIPART_DATA, "video/mp4", file_name="clip.mp4")
            else:
                path = tmp_path / "clip.mp4"
                path.write_bytes(s.MULTIPART_DATA)
                url = await async_client.upload_file(path)
        seen = sorted((fault.method, fault.path.rsplit("/", 1)[-1]) for fault in faults.fired)
    finally:
        faults.clear()
    assert seen == [("POST", "complete"), ("POST", "multipart"), ("PUT", "1"), ("PUT", "2")]
    served = download(url)
    assert served.content == s.MULTIPART_DATA and served.headers["content-type"] == "video/mp4"


# -- realtime ------------------------------------------------------------------------------------


def check_realtime_output(output: dict[str, Any], download: Any) -> None:
    (image,) = output["images"]
    assert {key: image[key] for key in s.REALTIME_IMAGE} == s.REALTIME_IMAGE
    assert s.png_size(download(image["url"]).content) == (s.REALTIME_IMAGE["width"], s.REALTIME_IMAGE["height"])


def test_realtime(fal: ModuleType, sync_client: Any, download: Any) -> None:
    with sync_client.realtime(s.REALTIME.endpoint_id) as connection:
        connection.send(s.REALTIME.input)
        check_realtime_output(connection.recv(), download)
        connection.send({"prompt": 5})  # a bad input is answered with an error frame; the session stays open
        with pytest.raises(fal.client.RealtimeError) as invalid:
            connection.recv()
        assert invalid.value.error == "VALIDATION_ERROR"
        connection.send({**s.REALTIME.input, "request_id": "second"})
        again = connection.recv()
        assert again["request_id"] == "second" and again["seed"] == s.REALTIME.input["seed"]


async def test_realtime_async(async_client: Any, download: Any) -> None:
    async with async_client.realtime(s.REALTIME.endpoint_id, max_buffering=4) as connection:
        await connection.send(s.REALTIME.input)
        check_realtime_output(await connection.recv(), download)


# -- errors --------------------------------------------------------------------------------------


def test_validation_error_carries_the_detail_list(fal: ModuleType, sync_client: Any) -> None:
    with pytest.raises(fal.FalClientHTTPError) as ran:
        sync_client.run(s.INVALID.endpoint_id, s.INVALID.input)
    handle = sync_client.submit(s.INVALID.endpoint_id, s.INVALID.input)  # the queue replays it at the result
    with pytest.raises(fal.FalClientHTTPError) as queued:
        handle.get(interval=0.01)
    for error in (ran.value, queued.value):
        assert error.status_code == s.INVALID_ERROR.status_code
        assert error.message == s.INVALID_ERROR.body["detail"]  # the list itself, as fal_client keeps it
        assert error.error_type is None and error.response.headers["x-fal-request-id"]


async def test_unknown_app_is_404(fal: ModuleType, sync_client: Any, async_client: Any) -> None:
    with pytest.raises(fal.FalClientHTTPError) as ran:
        sync_client.run(s.UNKNOWN_APP.endpoint_id, s.UNKNOWN_APP.input)
    with pytest.raises(fal.FalClientHTTPError) as submitted:
        await async_client.submit(s.UNKNOWN_APP.endpoint_id, s.UNKNOWN_APP.input)
    for error in (ran.value, submitted.value):
        assert error.status_code == s.UNKNOWN_APP_ERROR.status_code
        assert error.message == s.UNKNOWN_APP_ERROR.body["detail"]


def test_every_modality_through_fal_client(sync_client: Any, download: Any) -> None:
    """fal's own client, unchanged, on the offline models of real endpoints with their real inputs."""
    video = sync_client.subscribe("fal-ai/veo3", {"prompt": "waves", "duration": "4s", "generate_audio": False})
    served = download(video["video"]["url"])
    assert served.headers["content-type"] == "video/mp4" and served.content[4:8] == b"ftyp"
    picture = "data:image/png;base64," + base64.b64encode(s.image_png()).decode()
    edited = sync_client.subscribe("fal-ai/nano-banana/edit", {"prompt": "combine", "image_urls": [picture]})
    assert download(edited["images"][0]["url"]).headers["content-type"] == "image/png"
    text = "fal client speech round trip"
    speech = sync_client.subscribe("fal-ai/kokoro/american-english", {"prompt": text, "voice": "af_bella"})
    assert download(speech["audio"]["url"]).content[:4] == b"RIFF"
    heard = sync_client.subscribe("fal-ai/wizper", {"audio_url": speech["audio"]["url"]})
    assert heard["text"] == text and heard["chunks"][0]["text"] == text


def test_a_listed_model_that_cannot_run_offline_says_so(fal: ModuleType, sync_client: Any) -> None:
    with pytest.raises(fal.FalClientHTTPError) as refused:
        sync_client.submit("fal-ai/flux/schnell", {"prompt": "x"})
    assert refused.value.status_code == 404
    assert refused.value.message.startswith("fal-ai/flux/schnell is not runnable in the offline emulator")
