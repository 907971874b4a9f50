"""The emulated queue over real HTTP: submit, status, result, cancel, positions, priority, timeouts, webhooks."""

from __future__ import annotations

import hashlib
import time
import uuid

import anyio
import httpx2
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from tests.emulator.conftest import MakeEmulator, Receiver, client_for, submit, wait_completed
from tests.realdata import openapi_doc

pytestmark = pytest.mark.anyio

LONG = {"seconds": 500, "steps": 1}  # 10 s at time_scale 0.02: a runner stays busy until cancelled


async def test_submit_then_status_then_result(emulator: EmulatorServer, client: httpx2.AsyncClient) -> None:
    response = await client.post("/queue/emulator/slow", json={"seconds": 2, "steps": 4})
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert response.headers["x-fal-request-id"] == request_id
    assert body["status"] == "IN_QUEUE"
    assert body["queue_position"] == 0
    app_url = f"{emulator.base_url}/queue/emulator/slow/requests/{request_id}"
    assert (body["response_url"], body["status_url"], body["cancel_url"]) == (
        app_url,
        f"{app_url}/status",
        f"{app_url}/cancel",
    )
    assert "gateway_request_id" not in body

    running = await client.get(body["status_url"])
    assert running.status_code == 202
    assert running.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")

    final = await wait_completed(client, body["status_url"])
    assert final["status"] == "COMPLETED"
    assert [entry["message"] for entry in final["logs"]] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    entry = final["logs"][0]
    assert entry["level"] == "INFO" and entry["source"] == "USER" and entry["labels"] == {}
    assert final["metrics"]["inference_time"] >= 2 * emulator.config.time_scale * 0.9
    assert "error" not in final and final["response_url"] == app_url

    result = await client.get(body["response_url"])
    assert result.status_code == 200
    assert result.json() == {"steps": 4, "seconds": 2, "message": "Slept 2 seconds in 4 steps"}
    assert result.headers["x-fal-request-id"] == request_id
    assert result.headers["x-fal-billable-units"] == "2"
    key = f"emulator/slow {input_digest({'seconds': 2, 'steps': 4})}"
    assert emulator.state.submissions[key] == 1


async def test_logs_key_null_unless_requested(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/slow", {"seconds": 0.5, "steps": 2})
    await wait_completed(client, body["status_url"])
    for flag, expect_list in (("0", False), ("false", False), ("1", True), ("true", True)):
        status = (await client.get(body["status_url"], params={"logs": flag})).json()
        assert "logs" in status
        assert isinstance(status["logs"], list) is expect_list, flag
    assert (await client.get(body["status_url"])).json()["logs"] is None


async def test_status_accepts_full_id_and_trailing_slash(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "fal-ai/flux/dev", {"prompt": "a fox", "image_size": "square", "seed": 1})
    request_id = body["request_id"]
    assert body["status_url"].endswith(f"/queue/fal-ai/flux/requests/{request_id}/status")  # app-only URLs
    await wait_completed(client, body["status_url"])
    for path in (
        f"/queue/fal-ai/flux/dev/requests/{request_id}/status",
        f"/queue/fal-ai/flux/requests/{request_id}/status/",
    ):
        assert (await client.get(path)).status_code == 200, path
    full = await client.get(f"/queue/fal-ai/flux/dev/requests/{request_id}/")
    assert full.status_code == 200 and full.json()["seed"] == 1
    assert (await client.get(f"/queue/fal-ai/flux/requests/{request_id}/response")).json()["seed"] == 1


async def test_unknown_request_and_wrong_app_are_404(client: httpx2.AsyncClient) -> None:
    missing = f"/queue/emulator/slow/requests/{uuid.uuid4()}"
    for method, path in (("GET", f"{missing}/status"), ("PUT", f"{missing}/cancel")):
        response = await client.request(method, path)
        assert response.status_code == 404 and response.json() == {"status": "NOT_FOUND"}
    assert (await client.get(missing)).status_code == 404
    body = await submit(client, "emulator/slow", {"seconds": 0, "steps": 1})
    wrong_app = await client.get(f"/queue/fal-ai/flux/requests/{body['request_id']}/status")
    assert wrong_app.status_code == 404


async def test_queue_position_is_real_under_the_concurrency_limit(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with client_for(server) as http:
        first = await submit(http, "emulator/slow", LONG)
        second = await submit(http, "emulator/slow", {**LONG, "steps": 2})
        third = await submit(http, "emulator/slow", {**LONG, "steps": 3})
        assert (second["queue_position"], third["queue_position"]) == (0, 1)
        assert (await http.get(first["status_url"])).json()["status"] == "IN_PROGRESS"
        statuses = [(await http.get(b["status_url"])).json() for b in (second, third)]
        assert [(s["status"], s["queue_position"]) for s in statuses] == [("IN_QUEUE", 0), ("IN_QUEUE", 1)]
        # Every key of fal's QueueStatus: logs (null unless asked for) and metrics ({} until done) throughout.
        assert (statuses[0]["logs"], statuses[0]["metrics"]) == (None, {})

        assert (await http.put(first["cancel_url"])).status_code == 202
        await wait_completed(http, first["status_url"])
        second_status = (await http.get(second["status_url"])).json()
        third_status = (await http.get(third["status_url"])).json()
        assert second_status["status"] == "IN_PROGRESS" and second_status["logs"] is None
        assert (third_status["status"], third_status["queue_position"]) == ("IN_QUEUE", 0)
        # Another app has its own runners: not queued behind emulator/slow.
        other = await submit(http, "emulator/strict", {"prompt": "hello"})
        assert (await wait_completed(http, other["status_url"]))["status"] == "COMPLETED"
        for body in (second, third):
            await http.put(body["cancel_url"])


async def test_low_priority_waits_behind_normal(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with client_for(server) as http:
        blocker = await submit(http, "emulator/slow", LONG)
        low = await submit(http, "emulator/slow", {"seconds": 0, "steps": 1}, headers={"X-Fal-Queue-Priority": "low"})
        normal = await submit(http, "emulator/slow", {"seconds": 0, "steps": 2})
        assert normal["queue_position"] == 0
        assert (await http.get(low["status_url"])).json()["queue_position"] == 1
        await http.put(blocker["cancel_url"])
        low_done = await wait_completed(http, low["status_url"])
        normal_done = await wait_completed(http, normal["status_url"])
        low_record = server.state.queue.get(low["request_id"])
        normal_record = server.state.queue.get(normal["request_id"])
        assert low_record and normal_record and low_done["status"] == normal_done["status"] == "COMPLETED"
        assert normal_record.started_at is not None and low_record.started_at is not None
        assert normal_record.started_at < low_record.started_at
        bad = await http.post("/queue/emulator/slow", json={}, headers={"X-Fal-Queue-Priority": "urgent"})
        assert bad.status_code == 400 and bad.json()["error_type"] == "bad_request"


async def test_validation_error_replays_at_result(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/strict", {"prompt": "x", "num_images": 9})
    final = await wait_completed(client, body["status_url"])
    assert final["status"] == "COMPLETED"
    assert "error" not in final and "error_type" not in final  # a model's 422 is only at the result
    result = await client.get(body["response_url"])
    assert result.status_code == 422
    detail = result.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body", "prompt"], "string_too_short"),
        (["body", "num_images"], "less_than_equal"),
    ]
    assert detail[1]["ctx"] == {"le": 4} and detail[1]["url"] == "https://docs.fal.ai/errors/#less_than_equal"
    assert "x-fal-billable-units" not in result.headers


async def test_server_error_replays_at_result(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/slow", {"seconds": 0, "fail": True, "fail_with": "runner_disconnected"})
    final = await wait_completed(client, body["status_url"])
    assert final["error_type"] == "runner_disconnected"
    assert final["error"].startswith("Emulated failure")
    result = await client.get(body["response_url"])
    assert result.status_code == 503
    assert result.headers["x-fal-error-type"] == "runner_disconnected"
    assert result.json()["error_type"] == "runner_disconnected"
    again = await client.get(body["response_url"])
    assert (again.status_code, again.json()) == (503, result.json())


async def test_result_before_completion_is_202_with_status(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "emulator/slow", LONG)
    early = await client.get(body["response_url"])
    assert early.status_code == 202
    assert early.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert early.json()["request_id"] == body["request_id"]
    await client.put(body["cancel_url"])


async def test_cancel_in_progress_queued_completed_unknown(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with client_for(server) as http:
        running = await submit(http, "emulator/slow", LONG)
        queued = await submit(http, "emulator/slow", {**LONG, "steps": 2})
        for body in (queued, running):
            response = await http.put(body["cancel_url"])
            assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        for body in (queued, running):
            final = await wait_completed(http, body["status_url"])
            assert (final["status"], final["error_type"]) == ("COMPLETED", "client_cancelled")
            result = await http.get(body["response_url"])
            assert result.status_code == 499 and result.json()["error_type"] == "client_cancelled"
        assert server.state.queue.get(queued["request_id"]).started_at is None  # type: ignore[union-attr]
        again = await http.put(running["cancel_url"])
        assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})


async def test_start_timeout_expires_while_queued(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with client_for(server) as http:
        blocker = await submit(http, "emulator/slow", LONG)
        started = time.monotonic()
        late = await submit(http, "emulator/slow", {"seconds": 0}, headers={"X-Fal-Request-Timeout": "0.3"})
        final = await wait_completed(http, late["status_url"])
        elapsed = time.monotonic() - started
        assert 0.25 < elapsed < 2.0
        assert (final["error_type"], final["metrics"]) == ("startup_timeout", {})
        result = await http.get(late["response_url"])
        assert result.status_code == 504
        assert result.headers["x-fal-request-timeout-type"] == "user"
        assert result.headers["x-fal-error-type"] == "startup_timeout"
        # A deadline that is met is not enforced once processing starts.
        await http.put(blocker["cancel_url"])
        ok = await submit(http, "emulator/slow", {"seconds": 20, "steps": 2}, headers={"X-Fal-Request-Timeout": "0.3"})
        assert (await wait_completed(http, ok["status_url"]))["logs"][-1]["message"] == "step 2/2"
        assert (await http.get(ok["response_url"])).status_code == 200
        for bad in ("soon", "0", "-1"):
            response = await http.post("/queue/emulator/slow", json={}, headers={"X-Fal-Request-Timeout": bad})
            assert response.status_code == 400, bad
            assert response.json()["error_type"] == "bad_request"
            assert response.headers["x-fal-error-type"] == "bad_request"


async def test_max_queue_length_rejects_with_429(make_emulator: MakeEmulator) -> None:
    server = make_emulator(concurrency_per_app=1)
    async with client_for(server) as http:
        blocker = await submit(http, "emulator/slow", LONG)
        waiting = await submit(http, "emulator/slow", {**LONG, "steps": 2})
        full = await http.post("/queue/emulator/slow", json={"seconds": 0}, params={"fal_max_queue_length": 1})
        assert full.status_code == 429 and "x-fal-request-id" in full.headers
        assert server.state.submissions[f"emulator/slow {input_digest({'seconds': 0})}"] == 0
        fits = await http.post("/queue/emulator/slow", json={"seconds": 0}, params={"fal_max_queue_length": 2})
        assert fits.status_code == 200 and fits.json()["queue_position"] == 1
        for body in (blocker, waiting, fits.json()):
            await http.put(body["cancel_url"])


async def test_gateway_rejections(make_emulator: MakeEmulator, client: httpx2.AsyncClient) -> None:
    unknown = await client.post("/queue/fal-ai/no-such-model", json={})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": 'Application "no-such-model" not found'}
    assert "x-fal-request-id" in unknown.headers
    async with httpx2.AsyncClient(base_url=client.base_url) as anonymous:
        for headers in ({}, {"Authorization": "Key"}, {"Authorization": "Basic abc"}):
            response = await anonymous.post("/queue/emulator/slow", json={}, headers=headers)
            assert (response.status_code, response.json()) == (401, {"detail": "invalid key credentials"})
        bearer = await anonymous.post("/queue/emulator/slow", json={}, headers={"Authorization": "Bearer jwt"})
        assert bearer.status_code == 200
    broken = await client.post(
        "/queue/emulator/slow", content=b'{"seconds": ', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    not_object = await client.post("/queue/emulator/slow", json=[1, 2])
    assert not_object.status_code == 422 and not_object.json()["detail"][0]["loc"] == ["body"]
    small = make_emulator(max_request_body_bytes=1000)
    async with client_for(small) as http:
        too_big = await http.post("/queue/emulator/strict", json={"prompt": "x" * 2000})
        assert too_big.status_code == 413
        assert sum(small.state.submissions.values()) == 0


async def test_unknown_subpath_of_known_app_fails_at_result(client: httpx2.AsyncClient) -> None:
    body = await submit(client, "fal-ai/flux/unlisted", {"prompt": "x"})
    assert body["status_url"].endswith(f"/fal-ai/flux/requests/{body['request_id']}/status")
    final = await wait_completed(client, body["status_url"])
    assert "error" not in final  # the runner's own 404: at the result only
    result = await client.get(body["response_url"])
    assert (result.status_code, result.json()) == (404, {"detail": "Path /unlisted not found"})


async def test_a_listed_model_that_cannot_run_offline_is_refused_at_submit(
    client: httpx2.AsyncClient, emulator: EmulatorServer
) -> None:
    before = sum(emulator.state.submissions.values())
    for path in (
        "/queue/fal-ai/flux/schnell",
        "/run/fal-ai/flux/schnell",
        "/run/fal-ai/wan/v2.2-a14b/text-to-video/stream",
    ):
        refused = await client.post(path, json={"prompt": "x"})
        assert refused.status_code == 404, path
        detail = refused.json()["detail"]
        assert detail.startswith(
            f"{path.split('/', 2)[2].removesuffix('/stream')} is not runnable in the offline emulator"
        )
        assert "fal-ai/flux/dev" in detail and "[not runnable offline]" in detail and "real fal key" in detail
    assert sum(emulator.state.submissions.values()) == before  # nothing queued, nothing run


async def test_requests_for_lists_history(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    async with client_for(server) as http:
        bodies = [await submit(http, "emulator/strict", {"prompt": f"number {i}"}) for i in range(3)]
        for body in bodies:
            await wait_completed(http, body["status_url"])
    records = server.state.queue.requests_for("emulator/strict")
    assert [r.request_id for r in records] == [b["request_id"] for b in bodies]
    assert records[0].input == {"prompt": "number 0"} and records[0].status == "COMPLETED"
    assert records[0].result_status_code == 200 and records[0].result_body["ok"] is True
    assert records[0].submitted_at <= records[0].started_at <= records[0].completed_at  # type: ignore[operator]
    assert server.state.queue.requests_for("emulator/slow") == []


async def test_result_expires_after_retention(make_emulator: MakeEmulator) -> None:
    server = make_emulator(result_retention_seconds=0.6, large_result_retention_seconds=0.1)
    async with client_for(server) as http:
        large = await submit(http, "emulator/strict", {"prompt": "large", "tags": ["x" * 4000] * 3})  # ≥ 10 KB
        small = await submit(http, "emulator/strict", {"prompt": "small"})
        await wait_completed(http, small["status_url"])
        await anyio.sleep(0.3)
        assert server.state.queue.requests_for("emulator/strict")[0].status == "COMPLETED"
        assert (await http.get(large["response_url"])).status_code == 404
        assert (await http.get(small["response_url"])).status_code == 200
        await anyio.sleep(0.4)
        assert (await http.get(small["response_url"])).status_code == 404
        assert (await http.get(small["status_url"])).json() == {"status": "NOT_FOUND"}


async def test_webhook_is_delivered_on_completion(make_emulator: MakeEmulator, receiver: Receiver) -> None:
    server = make_emulator()
    async with client_for(server) as http:
        body = await submit(http, "emulator/strict", {"prompt": "hooked"}, params={"fal_webhook": receiver.url})
        assert body["gateway_request_id"] == body["request_id"]
        failed = await submit(http, "emulator/strict", {"prompt": "x"}, params={"fal_webhook": receiver.url})
    for _ in range(400):
        if len(receiver.received) == 2:
            break
        await anyio.sleep(0.01)
    documents = {doc["request_id"]: (headers, doc) for headers, doc in receiver.received}
    headers, ok = documents[body["request_id"]]
    assert ok["status"] == "OK" and ok["payload"]["input"]["prompt"] == "hooked"
    assert ok["gateway_request_id"] == body["request_id"]
    assert headers["x-fal-webhook-request-id"] == body["request_id"]
    _, error = documents[failed["request_id"]]
    assert error["status"] == "ERROR" and error["error"] == "Invalid status code: 422"
    assert error["payload"]["detail"][0]["type"] == "string_too_short"


async def test_submissions_are_keyed_by_canonical_input(emulator: EmulatorServer) -> None:
    """Submissions are keyed by endpoint and canonical input, whatever the key order."""
    async with client_for(emulator) as http:
        await submit(http, "emulator/strict", {"prompt": "order", "num_images": 2})
        await submit(http, "emulator/strict", {"num_images": 2, "prompt": "order"})
    assert emulator.state.submissions[f"emulator/strict {input_digest({'prompt': 'order', 'num_images': 2})}"] == 2


async def test_each_request_records_which_key_submitted_it(make_emulator: MakeEmulator) -> None:
    """A non-secret identity per request (for per-user isolation tests); the key itself is never kept."""
    server = make_emulator(result_retention_seconds=0.05)
    callers = {
        "Key alice-id:alice-secret": "alice-id",
        "Key opaque-key-without-colon": "sha256:" + hashlib.sha256(b"opaque-key-without-colon").hexdigest()[:12],
        "Bearer some.jwt.token": "sha256:" + hashlib.sha256(b"some.jwt.token").hexdigest()[:12],
    }
    for number, authorization in enumerate(callers):
        async with httpx2.AsyncClient(base_url=server.base_url, headers={"Authorization": authorization}) as http:
            body = await submit(http, "emulator/strict", {"prompt": f"caller {number}"})
            await wait_completed(http, body["status_url"])
    records = server.state.queue.requests_for("emulator/strict")
    assert [r.key_id for r in records] == list(callers.values())
    for record in records:
        kept = repr(vars(record))
        assert "alice-secret" not in kept and "opaque-key-without-colon" not in kept and "some.jwt.token" not in kept
    await anyio.sleep(0.1)
    summaries = server.state.queue.requests_for("emulator/strict")  # purged by now: the identity stays
    assert [(type(s).__name__, s.key_id) for s in summaries] == [("RequestSummary", v) for v in callers.values()]


async def test_expired_requests_are_purged_to_a_bounded_history(make_emulator: MakeEmulator) -> None:
    """A long-running emulator keeps full records only within retention; history keeps small summaries."""
    server = make_emulator(
        result_retention_seconds=0.2, large_result_retention_seconds=0.2, history_payload_bytes=2000, history_limit=3
    )
    queue = server.state.queue
    async with client_for(server) as http:
        bodies = [await submit(http, "emulator/strict", {"prompt": f"number {i}"}) for i in range(4)]
        large = await submit(http, "emulator/strict", {"prompt": "large", "tags": ["x" * 1000] * 3})
        for body in [*bodies, large]:
            await wait_completed(http, body["status_url"])
        assert queue.live == 5
        await anyio.sleep(0.25)
        fresh = await submit(http, "emulator/strict", {"prompt": "fresh"})  # any submit purges what expired
        assert queue.live == 1
        assert (await http.get(bodies[3]["status_url"])).status_code == 404
        history = queue.requests_for("emulator/strict")
        # The 3 newest summaries survive (number 2, number 3, large), then the live request.
        expected = [bodies[2], bodies[3], large, fresh]
        assert [r.request_id for r in history] == [body["request_id"] for body in expected]
        summary = history[1]
        assert summary.purged and summary.status == "COMPLETED" and summary.result_status_code == 200
        assert summary.input == {"prompt": "number 3"} and summary.result_body["ok"] is True
        assert summary.submitted_at <= summary.started_at <= summary.completed_at  # type: ignore[operator]
        assert history[2].input is None and history[2].result_body is None  # over history_payload_bytes
        listed = await http.get(
            "/platform/models/requests/by-endpoint", params={"endpoint_id": "emulator/strict", "expand": "payloads"}
        )
        items = {item["request_id"]: item for item in listed.json()["items"]}
        assert items[bodies[3]["request_id"]]["json_input"] == {"prompt": "number 3"}
        assert items[bodies[3]["request_id"]]["status_code"] == 200
        assert bodies[0]["request_id"] not in items


async def test_status_bodies_carry_every_key_of_fals_queue_status(client: httpx2.AsyncClient) -> None:
    """Checked against the QueueStatus schema of a real fal document: its keys, always (logs/metrics too).
    (Not its types: fal's generated schema calls ``logs`` an object; the protocol sends a list or null.)"""
    queue_status = openapi_doc("fal-ai/flux/dev")["components"]["schemas"]["QueueStatus"]
    keys = set(queue_status["properties"])
    body = await submit(client, "emulator/slow", {"seconds": 0.2, "steps": 1})
    bodies = [(await client.get(body["status_url"])).json()]
    bodies.append(await wait_completed(client, body["status_url"]))
    for status in bodies:
        assert set(queue_status["required"]) <= set(status)
        expected = keys - ({"queue_position"} if status["status"] != "IN_QUEUE" else set())
        assert set(status) == expected, status
