"""Our own client (``fal_mcp.fal.client.FalClient``) through the same scenarios as fal's official clients.

Same emulator setup as the fal_client suite (https/wss with the emulator's CA, one runner per app),
same inputs and expectations (``scenarios.py``).
"""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import httpx2
import pytest
from PIL import Image

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import FalAPIError, NotFoundError, RequestCancelledError, ValidationError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.models import CancelOutcome, Completed, InProgress, Queued, WaitEvent
from fal_mcp.fal.storage import StorageAPI
from tests.conformance import scenarios as s

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tls_emulator: EmulatorServer) -> AsyncIterator[FalClient]:
    assert tls_emulator.tls is not None
    async with FalClient(
        credentials=credentials_from_key(s.KEY, source="test"),
        hosts=FalHosts.for_base_url(tls_emulator.base_url),
        verify=tls_emulator.tls.client_context(),
        timeout=10.0,
    ) as fal:
        yield fal


@pytest.fixture
def download(tls_emulator: EmulatorServer) -> Iterator[Any]:
    """GET a URL the emulator handed out (with a plain HTTP client, not the one under test)."""
    assert tls_emulator.tls is not None
    with httpx2.Client(verify=tls_emulator.tls.client_context(), timeout=10.0) as http:

        def get(url: str) -> httpx2.Response:
            assert url.startswith(tls_emulator.base_url + "/cdn/files/"), url
            response = http.get(url)
            assert response.status_code == 200, response.text
            return response

        yield get


# -- queue -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["status-stream", "polling"])
async def test_subscribe_with_logs_and_queue_updates(
    client: FalClient, tls_emulator: EmulatorServer, stream: bool
) -> None:
    await client.queue.submit(s.BLOCKER.endpoint_id, s.BLOCKER.input)
    handle = await client.queue.submit(s.SUBSCRIBE.endpoint_id, s.SUBSCRIBE.input)
    events: list[WaitEvent] = []
    async with aclosing(
        client.queue.wait(handle.endpoint_id, handle.request_id, logs=True, poll_interval=0.01, stream=stream)
    ) as waiting:
        async for event in waiting:
            events.append(event)
    assert await client.queue.result(handle.endpoint_id, handle.request_id) == s.SUBSCRIBE.output

    kinds = [type(event) for event in events]
    assert kinds[0] is Queued and events[0] == Queued(request_id=handle.request_id, position=0)
    assert kinds[-1] is Completed and kinds.count(Completed) == 1
    first_progress = kinds.index(InProgress)
    assert set(kinds[:first_progress]) == {Queued} and set(kinds[first_progress:-1]) == {InProgress}
    assert any(isinstance(event, InProgress) and event.logs for event in events), "no progress carried log lines"
    lines = [entry.message for event in events if isinstance(event, InProgress | Completed) for entry in event.logs]
    assert lines == s.SUBSCRIBE.logs  # each line exactly once, in order
    final = events[-1]
    assert isinstance(final, Completed) and not final.failed and final.metrics["inference_time"] > 0
    record = tls_emulator.state.queue.get(handle.request_id)
    assert record is not None and record.key_id == s.KEY_ID


async def test_subscribe_in_one_call(client: FalClient) -> None:
    await client.queue.submit(s.BLOCKER.endpoint_id, s.BLOCKER.input)
    events: list[WaitEvent] = []
    handle, output = await client.queue.subscribe(
        s.SUBSCRIBE.endpoint_id, s.SUBSCRIBE.input, logs=True, on_event=events.append
    )
    assert output == s.SUBSCRIBE.output and uuid.UUID(handle.request_id)
    assert isinstance(events[0], Queued) and isinstance(events[-1], Completed)


async def test_submit_status_result(client: FalClient, tls_emulator: EmulatorServer) -> None:
    handle = await client.queue.submit(s.QUEUE.endpoint_id, s.QUEUE.input)
    assert handle.status_url == (f"{tls_emulator.base_url}/queue/emulator/strict/requests/{handle.request_id}/status")
    async with aclosing(client.queue.wait(handle.endpoint_id, handle.request_id, poll_interval=0.01)) as waiting:
        async for _ in waiting:
            pass
    status = await client.queue.status(handle.endpoint_id, handle.request_id, logs=True)
    assert status.completed and not status.failed
    assert [entry.message for entry in status.logs or []] == s.QUEUE.logs
    assert (await client.queue.status(handle.endpoint_id, handle.request_id)).logs is None
    assert await client.queue.result(handle.endpoint_id, handle.request_id) == s.QUEUE.output


async def test_cancel_a_queued_and_a_running_request(client: FalClient) -> None:
    running = await client.queue.submit(s.LONG.endpoint_id, s.LONG.input)
    queued = await client.queue.submit(s.LONG.endpoint_id, s.LONG.input)
    waiting = await client.queue.status(queued.endpoint_id, queued.request_id)
    assert (waiting.status, waiting.queue_position) == ("IN_QUEUE", 0)
    assert (await client.queue.status(running.endpoint_id, running.request_id)).status == "IN_PROGRESS"

    for handle in (queued, running):
        assert await client.queue.cancel(handle.endpoint_id, handle.request_id) == CancelOutcome.CANCELLATION_REQUESTED
    for handle in (queued, running):
        async with aclosing(client.queue.wait(handle.endpoint_id, handle.request_id, poll_interval=0.01)) as events:
            final = [event async for event in events][-1]
        assert isinstance(final, Completed)
        assert (final.error, final.error_type) == (s.CANCELLED.body["detail"], "client_cancelled")
        with pytest.raises(RequestCancelledError) as cancelled:
            await client.queue.result(handle.endpoint_id, handle.request_id)
        assert cancelled.value.status_code == s.CANCELLED.status_code
        assert (cancelled.value.body, cancelled.value.request_id) == (s.CANCELLED.body, handle.request_id)
    assert await client.queue.cancel(running.endpoint_id, running.request_id) == CancelOutcome.ALREADY_COMPLETED


# -- run and stream ------------------------------------------------------------------------------


async def test_run(client: FalClient, download: Any) -> None:
    result = await client.runs.run(s.RUN.endpoint_id, s.RUN.input)
    (image,) = result.data["images"]
    assert {key: image[key] for key in s.RUN_IMAGE} == s.RUN_IMAGE
    assert result.data["seed"] == s.RUN.input["seed"] and result.request_id and result.billable_units == 1
    assert s.png_size(download(image["url"]).content) == (s.RUN_IMAGE["width"], s.RUN_IMAGE["height"])


async def test_stream(client: FalClient) -> None:
    async with aclosing(client.runs.stream(s.STREAM.endpoint_id, s.STREAM.input)) as stream:
        events = [event async for event in stream]
    *partials, final = events
    assert len(partials) >= 3 and all(event["partial"] is True for event in partials)
    outputs = [event["output"] for event in events]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(outputs))
    assert final == s.STREAM.output


# -- storage -------------------------------------------------------------------------------------


async def test_upload_round_trip(client: FalClient, download: Any) -> None:
    uploaded = await client.storage.upload_bytes(s.UPLOAD_DATA, s.UPLOAD_TYPE, s.UPLOAD_NAME)
    assert uploaded.url.endswith("_" + s.UPLOAD_NAME) and uploaded.size == len(s.UPLOAD_DATA)
    served = download(uploaded.url)
    assert served.content == s.UPLOAD_DATA and served.headers["content-type"] == s.UPLOAD_TYPE


async def test_upload_image(client: FalClient, download: Any) -> None:
    uploaded = await client.storage.upload_bytes(s.image_png(), "image/png", "picture.png")
    picture = Image.open(io.BytesIO(download(uploaded.url).content))
    assert picture.size == s.IMAGE_SIZE and picture.convert("RGB").getpixel((5, 5)) == s.IMAGE_COLOR


async def test_multipart_upload(client: FalClient, download: Any, tls_emulator: EmulatorServer) -> None:
    storage = StorageAPI(client.http, multipart_threshold=s.MULTIPART_THRESHOLD)  # 10 MiB parts, like fal_client
    faults = tls_emulator.state.faults
    faults.add("slow", delay_seconds=0.0, role="cdn", path="/multipart")  # a no-op that records each request
    try:
        uploaded = await storage.upload_bytes(s.MULTIPART_DATA, "video/mp4", "clip.mp4")
        seen = sorted((fault.method, fault.path.rsplit("/", 1)[-1]) for fault in faults.fired)
    finally:
        faults.clear()
    assert seen == [("POST", "complete"), ("POST", "multipart"), ("PUT", "1"), ("PUT", "2")]
    served = download(uploaded.url)
    assert served.content == s.MULTIPART_DATA and served.headers["content-type"] == "video/mp4"


# -- realtime ------------------------------------------------------------------------------------


async def test_realtime(client: FalClient, download: Any) -> None:
    async with client.realtime.connect(s.REALTIME.endpoint_id) as connection:
        output = await connection.run(s.REALTIME.input)
        (image,) = output["images"]
        assert {key: image[key] for key in s.REALTIME_IMAGE} == s.REALTIME_IMAGE
        assert s.png_size(download(image["url"]).content) == (s.REALTIME_IMAGE["width"], s.REALTIME_IMAGE["height"])
        with pytest.raises(ValidationError) as invalid:
            await connection.run({"prompt": 5})
        assert invalid.value.error_type == "VALIDATION_ERROR" and invalid.value.errors[0].type == "string_type"
        again = await connection.run({**s.REALTIME.input, "request_id": "second"})  # the session stays open
        assert again["request_id"] == "second"


# -- errors --------------------------------------------------------------------------------------


async def test_validation_error_carries_the_field_errors(client: FalClient) -> None:
    with pytest.raises(ValidationError) as ran:
        await client.runs.run(s.INVALID.endpoint_id, s.INVALID.input)
    with pytest.raises(ValidationError) as queued:  # replayed by the queue's result
        await client.queue.subscribe(s.INVALID.endpoint_id, s.INVALID.input)
    for error in (ran.value, queued.value):
        assert (error.status_code, error.body) == (s.INVALID_ERROR.status_code, s.INVALID_ERROR.body)
        ((field_error),) = error.errors
        assert (field_error.loc, field_error.type, field_error.ctx) == (
            ("body", "prompt"),
            "string_too_short",
            {"min_length": 3},
        )
        assert error.request_id


async def test_unknown_app_is_404(client: FalClient) -> None:
    with pytest.raises(NotFoundError) as ran:
        await client.runs.run(s.UNKNOWN_APP.endpoint_id, s.UNKNOWN_APP.input)
    with pytest.raises(FalAPIError) as submitted:
        await client.queue.submit(s.UNKNOWN_APP.endpoint_id, s.UNKNOWN_APP.input)
    for error in (ran.value, submitted.value):
        assert isinstance(error, NotFoundError)
        assert (error.status_code, error.body) == (s.UNKNOWN_APP_ERROR.status_code, s.UNKNOWN_APP_ERROR.body)
