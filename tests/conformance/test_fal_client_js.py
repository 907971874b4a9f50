"""fal's official JS client (``@fal-ai/client``, pinned in ``js/package.json``), unchanged, in ``proxyUrl`` mode.

``js/scenarios.mjs`` runs every scenario once against a plain-http emulator (its ``/proxy`` route honours
``x-fal-target-url``) and prints what the client returned or threw, one JSON line per scenario; the
tests below assert on those lines against the shared expectations in ``scenarios.py``. Realtime runs on
Node 20 too: the harness gives fal-js the ``ws`` package's WebSocket when Node has none.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fal_mcp.emulator.server import EmulatorServer
from tests.conformance import scenarios as s

JS_DIR = Path(__file__).parent / "js"
NODE_TIMEOUT_SECONDS = 90


@pytest.fixture(scope="module")
def js(http_emulator: EmulatorServer) -> dict[str, dict[str, Any]]:
    """Each scenario's report, by name; a scenario that threw fails its test with the error."""
    wanted = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    if missing := [name for name in wanted if not (JS_DIR / "node_modules" / name).is_dir()]:
        pytest.fail(f"{', '.join(missing)} not installed: run `npm ci --prefix tests/conformance/js`")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH (the JS conformance tests need Node.js 20+)")
    done = subprocess.run(
        [node, "scenarios.mjs"],
        cwd=JS_DIR,
        input=json.dumps(s.as_json(http_emulator.base_url)),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"node exited {done.returncode}:\n{done.stderr[-4000:]}"
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {report["scenario"]: report for report in reports}


def result(js: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    report = js.get(name)
    assert report is not None, f"scenario {name} did not report (see scenarios.mjs)"
    assert report["ok"], f"{name} threw: {report['error']}\n{report.get('stack', '')}"
    return report["result"]


def check_error(error: dict[str, Any], expected: s.Failure, kind: str) -> None:
    assert error["name"] == kind and error["isApiError"] is True, error
    assert (error["status"], error["body"]) == (expected.status_code, expected.body)
    assert error["requestId"], "the error names the request (x-fal-request-id)"


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_subscribe_with_logs_and_queue_updates(
    js: dict[str, dict[str, Any]], http_emulator: EmulatorServer, mode: str
) -> None:
    outcome = result(js, f"subscribe_{mode}")
    assert outcome["data"] == s.SUBSCRIBE.output
    assert outcome["enqueued"] == [outcome["requestId"]]
    updates = outcome["updates"]
    states = [update["status"] for update in updates]
    assert states[0] == "IN_QUEUE" and updates[0]["queue_position"] == 0  # behind the blocker
    assert states[-1] == "COMPLETED" and states.count("COMPLETED") == 1
    first_progress = states.index("IN_PROGRESS")
    assert set(states[:first_progress]) == {"IN_QUEUE"} and set(states[first_progress:-1]) == {"IN_PROGRESS"}
    progress_logs = [update["logs"] for update in updates if update["status"] == "IN_PROGRESS"]
    assert any(progress_logs), "no IN_PROGRESS update carried log lines"
    assert all(logs == s.SUBSCRIBE.logs[: len(logs)] for logs in progress_logs)  # every line so far, in order
    assert updates[-1]["logs"] == s.SUBSCRIBE.logs and updates[-1]["error"] is None
    record = http_emulator.state.queue.get(outcome["requestId"])
    assert record is not None and record.input == s.SUBSCRIBE.input and record.key_id == s.KEY_ID


def test_queue_submit_status_result(js: dict[str, dict[str, Any]], http_emulator: EmulatorServer) -> None:
    outcome = result(js, "queue")
    submitted, final = outcome["submitted"], outcome["final"]
    request_id = submitted["request_id"]
    # The proxy mapped fal's queue host to the emulator, and URLs come back on the origin the client used.
    assert submitted["status_url"] == f"{http_emulator.base_url}/queue/emulator/strict/requests/{request_id}/status"
    assert final["status"] == "COMPLETED" and final["logs"] == s.QUEUE.logs and "error" not in final
    assert final["metrics"]["inference_time"] >= 0
    assert outcome["logsWithoutFlag"] is None
    assert (outcome["data"], outcome["requestId"]) == (s.QUEUE.output, request_id)


def test_queue_cancel_queued_and_running(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "cancel")
    assert (outcome["queuedStatus"], outcome["queuePosition"], outcome["runningStatus"]) == (
        "IN_QUEUE",
        0,
        "IN_PROGRESS",
    )
    assert outcome["cancelReturns"] == [None, None]  # queue.cancel resolves with nothing
    for name in ("queued", "running"):
        cancelled = outcome["outcomes"][name]
        assert cancelled["status"] == {
            "status": "COMPLETED",
            "error": s.CANCELLED.body["detail"],
            "error_type": "client_cancelled",
        }
        check_error(cancelled["result"], s.CANCELLED, "ApiError")
    check_error(outcome["again"], s.ALREADY_COMPLETED, "ApiError")


def test_run(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "run")
    (image,) = outcome["data"]["images"]
    assert {key: image[key] for key in s.RUN_IMAGE} == s.RUN_IMAGE
    assert outcome["data"]["seed"] == s.RUN.input["seed"] and outcome["requestId"]
    served = outcome["image"]
    assert (served["status"], served["contentType"]) == (200, "image/png")
    assert served["pngSize"] == [s.RUN_IMAGE["width"], s.RUN_IMAGE["height"]]


def test_blob_input_is_uploaded_then_fetched_by_the_model(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "blob_input")
    (image,) = outcome["data"]["images"]
    assert (image["width"], image["height"]) == s.IMAGE_SIZE  # the model read the uploaded picture
    assert outcome["image"]["pngSize"] == list(s.IMAGE_SIZE)


def test_stream_events_then_done(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "stream")
    *partials, final = outcome["events"]
    assert len(partials) >= 3 and all(event["partial"] is True for event in partials)
    assert final == outcome["done"] == s.STREAM.output
    assert outcome["requestId"]


def test_client_side_stream_with_a_jwt(js: dict[str, dict[str, Any]]) -> None:
    """``connectionMode: "client"``: ``?fal_jwt_token=`` and no Authorization header."""
    outcome = result(js, "stream_client_side")
    assert outcome["done"] == s.STREAM.output and outcome["requestId"]


def test_realtime(js: dict[str, dict[str, Any]], http_emulator: EmulatorServer) -> None:
    """``fal.realtime.connect`` on Node 20 with the ``ws`` package as its WebSocket (see scenarios.mjs)."""
    outcome = result(js, "realtime")
    (url,) = outcome["urls"]  # one session for all three inputs; fal-js built fal's real URL
    path, query = url.split("?", 1)
    assert path == f"wss://fal.run/{s.REALTIME.endpoint_id}/realtime"
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    assert params["max_buffering"] == "4" and params["fal_jwt_token"].count(".") == 2  # from POST /rest/tokens/
    first = outcome["first"]["result"]
    (image,) = first["images"]
    assert {key: image[key] for key in s.REALTIME_IMAGE} == s.REALTIME_IMAGE
    assert image["url"].startswith(f"{http_emulator.base_url}/cdn/files/")
    assert outcome["image"]["pngSize"] == [s.REALTIME_IMAGE["width"], s.REALTIME_IMAGE["height"]]
    invalid = outcome["invalid"]["error"]  # a bad input is answered with an error frame; the session stays open
    assert invalid["isApiError"] is True and invalid["status"] == 400
    assert invalid["body"]["type"] == "x-fal-error" and invalid["body"]["error"] == "VALIDATION_ERROR"
    assert invalid["message"].startswith("VALIDATION_ERROR: ")
    again = outcome["again"]["result"]
    assert again["request_id"] == "second" and again["seed"] == s.REALTIME.input["seed"]


def test_realtime_token_for_another_app_is_refused(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "realtime_wrong_token")
    assert outcome["asked"] == {"tokenFor": f"{s.REALTIME.endpoint_id}/realtime"}
    # fal-js takes the Unauthorized frame (its "status": "error") as a re-auth signal, not an error; what it
    # reports is the 1008 close that follows.
    refused = outcome["refused"]["error"]
    assert refused["isApiError"] is True and refused["status"] == 1008, refused


def test_storage_upload_round_trip(js: dict[str, dict[str, Any]], http_emulator: EmulatorServer) -> None:
    outcome = result(js, "storage")
    assert outcome["url"].startswith(f"{http_emulator.base_url}/cdn/files/")
    served = outcome["file"]
    assert (served["status"], served["contentType"]) == (200, s.UPLOAD_TYPE)
    assert (served["length"], served["sha256"]) == (len(s.UPLOAD_DATA), hashlib.sha256(s.UPLOAD_DATA).hexdigest())


def test_validation_error_has_field_errors(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "validation_error")
    for how in ("run", "subscribe"):  # direct, and replayed by the queue's result
        error = outcome[how]
        check_error(error, s.INVALID_ERROR, "ValidationError")
        assert error["isValidationError"] is True
        assert error["fieldErrors"] == error["promptErrors"] == s.INVALID_ERROR.body["detail"]


def test_unknown_app_is_404(js: dict[str, dict[str, Any]]) -> None:
    outcome = result(js, "unknown_app")
    for how in ("run", "submit"):
        check_error(outcome[how], s.UNKNOWN_APP_ERROR, "ApiError")
