"""Every tool through the official TypeScript MCP SDK client, over stdio and streamable HTTP.

That client (``@modelcontextprotocol/sdk``, pinned in ``package.json``) is inside Claude Code, Cursor,
VS Code, Gemini CLI and the MCP Inspector. Its ``callTool`` checks each result's ``structuredContent``
against the tool's ``outputSchema`` and throws when they disagree, which the Python client never does:
a tool that passes here is readable in those hosts. The servers run ``fal-mcp`` as a host would (a stdio
subprocess, or ``fal-mcp serve --transport http``) against the test emulator, so the emulator's own
records show what each call did to fal.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from fal_mcp import __version__
from tests.ts.conftest import ALL_TOOLS, SDK_LATEST, Session, stdio_session, unexplained_errors, wait_until


def assert_strictly_increasing(values: list[float]) -> None:
    assert values == sorted(set(values)), values


def test_handshake_and_tool_list(session: Session) -> None:
    connected = session.client.connected
    assert connected["protocolVersion"] == SDK_LATEST
    assert connected["serverInfo"]["name"] and connected["serverInfo"]["version"] == __version__
    assert "tools" in connected["capabilities"]
    listed = session.client.request("listTools")  # parsed by the SDK's own ListToolsResult schema
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert set(tools) == ALL_TOOLS
    assert set(listed["validated"]) == ALL_TOOLS  # every result below is checked against its outputSchema
    assert all(tool["outputSchema"]["type"] == "object" for tool in tools.values())


def test_model_search_and_schema(session: Session) -> None:
    client = session.client
    first = client.call("model_search", {"query": "flux", "limit": 2}).structured
    assert len(first["models"]) == 2 and first["has_more"] and first["next_cursor"]
    second = client.call("model_search", {"query": "flux", "limit": 2, "cursor": first["next_cursor"]}).structured
    assert {m["endpoint_id"] for m in first["models"]}.isdisjoint(m["endpoint_id"] for m in second["models"])
    summary = client.call("model_schema", {"endpoint_id": "fal-ai/flux/dev/image-to-image"}).structured
    assert summary["file_fields"] == ["image_url"] and summary["input_schema"] is None
    full = client.call("model_schema", {"endpoint_id": "fal-ai/flux/dev", "full": True}).structured
    assert full["input_schema"]["properties"]["prompt"] and full["output_schema"]


def test_subscribe_streams_progress_and_returns_files(session: Session) -> None:
    data = {"prompt": f"a kite over the sea ({session.name})", "num_inference_steps": 8, "seed": 4}
    call = session.client.call("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    job = call.structured
    assert job["status"] == "COMPLETED" and job["request_id"] and job["endpoint_id"] == "fal-ai/flux/dev"
    assert job["files"][0]["url"] == job["output"]["images"][0]["url"]
    kinds = call.block_types()
    assert kinds[0] == "text" and "resource_link" in kinds and "image" in kinds
    assert len(call.sent) >= 2, call.sent  # ~60 ms of work: under load only the submit and the end may show
    assert_strictly_increasing(call.sent_values())
    assert call.sent_messages()[-1] == "completed"
    record = session.emulator.state.queue.get(job["request_id"])
    assert record is not None and record.input == data and record.key_id == "server-key-id"


def test_subscribe_saves_into_download_dir_with_file_links(session: Session) -> None:
    data = {"prompt": f"a saved lighthouse ({session.name})", "num_inference_steps": 8, "seed": 9}
    call = session.client.call(
        "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": "out"}
    )
    job = call.structured
    saved = Path(job["files"][0]["saved_path"])
    assert saved.parent == session.workdir / "out" and saved.stat().st_size == job["files"][0]["size"]
    links = [block["uri"] for block in call.returned["content"] if block["type"] == "resource_link"]
    assert saved.as_uri() in links and job["files"][0]["url"] in links
    assert str(saved) in call.text  # a text-only host can find the file too


def test_bounded_wait_then_queue_result(session: Session) -> None:
    client = session.client
    data = {"seconds": 100, "steps": 5, "label": f"bounded {session.name}"}  # 2 s real, a step every 0.4 s
    first = client.call("fal_subscribe", {"endpoint_id": "emulator/slow", "input": data, "wait_seconds": 0.2})
    pending = first.structured
    assert pending["status"] in ("IN_QUEUE", "IN_PROGRESS") and "queue_result" in pending["next_step"]
    done = client.call("queue_result", {"request_id": pending["request_id"]})
    assert done.structured["status"] == "COMPLETED" and done.structured["output"]["steps"] == 5
    steps = [event for event in done.sent if event["message"].startswith("step ")]
    assert steps and all(event["total"] is not None for event in steps), done.sent  # "step 3/5" gives a total
    assert_strictly_increasing(done.sent_values())
    # Steps 0.4 s apart reach the host's onprogress one by one (each resets its request timeout).
    assert any((event["message"] or "").startswith("step ") for event in done.progress), done.progress


def test_queue_submit_status_cancel_and_jobs_list(session: Session) -> None:
    client = session.client
    data = {"seconds": 300, "steps": 30, "label": f"queue {session.name}"}
    submitted = client.call("queue_submit", {"endpoint_id": "emulator/slow", "input": data}).structured
    request_id = submitted["request_id"]
    assert submitted["status"] == "IN_QUEUE" and request_id
    status = client.call("queue_status", {"request_id": request_id, "logs": True}).structured
    assert status["status"] in ("IN_QUEUE", "IN_PROGRESS") and status["request_id"] == request_id
    cancelled = client.call("queue_cancel", {"request_id": request_id}).structured
    assert cancelled["outcome"] == "CANCELLATION_REQUESTED"
    record = session.emulator.state.queue.get(request_id)
    assert record is not None
    wait_until(lambda: record.error_type == "client_cancelled", what="fal to cancel the request")
    again = client.call("queue_cancel", {"request_id": request_id}).structured
    assert again["outcome"] == "ALREADY_COMPLETED"
    jobs = client.call("jobs_list", {"endpoint_id": "emulator/slow", "limit": 50}).structured["jobs"]
    assert request_id in [job["request_id"] for job in jobs]


def test_client_cancel_cancels_the_fal_job(session: Session) -> None:
    """The host aborts the call (Esc in Claude Code): the SDK sends notifications/cancelled, fal is told."""
    client = session.client
    data = {"seconds": 500, "steps": 50, "label": f"abort {session.name}"}  # 10 s real: only a cancel ends it early
    aborted = client.call("fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}, abortAfterProgress=2)
    assert aborted.threw is not None and aborted.result is None
    assert "cancelled by the test" in aborted.threw["message"]

    def cancelled_job() -> dict | None:
        jobs = client.call("jobs_list", {"endpoint_id": "emulator/slow", "limit": 50}).structured["jobs"]
        return next(
            (j for j in jobs if data["label"] in (j["input_preview"] or "") and j["status"] == "CANCELLED"), None
        )

    job = wait_until(cancelled_job, what="the ledger to record the cancelled job")
    record = session.emulator.state.queue.get(job["request_id"])
    assert record is not None and record.status == "COMPLETED" and record.error_type == "client_cancelled"
    assert record.completed_at is not None and record.completed_at - record.submitted_at < 9  # well before its end


def test_fal_run(session: Session) -> None:
    data = {"prompt": f"quick ({session.name})", "seed": 1}
    call = session.client.call("fal_run", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    job = call.structured
    assert job["status"] == "COMPLETED" and job["request_id"] and job["output"]["images"]
    assert "resource_link" in call.block_types()


def test_fal_stream_reports_partials_as_progress(session: Session) -> None:
    data = {"prompt": f"tell me a story ({session.name})", "model": "google/gemini-2.5-flash"}
    call = session.client.call("fal_stream", {"endpoint_id": "openrouter/router", "input": data})
    out = call.structured
    assert out["events"] >= 2 and out["output"]["partial"] is False and out["output"]["output"]
    assert len([m for m in call.sent_messages() if m and m != "completed"]) >= 2, call.sent
    assert_strictly_increasing(call.sent_values())


def test_fal_realtime(session: Session) -> None:
    inputs = [{"prompt": "a red cube", "seed": 1}, {"prompt": "a blue ball", "seed": 2}]
    call = session.client.call("fal_realtime", {"endpoint_id": "fal-ai/fast-lcm-diffusion", "inputs": inputs})
    outputs = call.structured["outputs"]
    assert [o.get("seed") for o in outputs] == [1, 2] and all(o["images"] for o in outputs)


def test_upload_file_from_a_path_and_from_data(session: Session) -> None:
    client = session.client
    from_path = client.call("upload_file", {"path": "pixel.png"}).structured
    assert from_path["content_type"] == "image/png"
    assert from_path["size"] == (session.workdir / "pixel.png").stat().st_size
    data = base64.b64encode(b"hello from typescript").decode()
    inline = client.call("upload_file", {"data": data, "content_type": "text/plain"}).structured
    assert inline["size"] == len(b"hello from typescript") and inline["url"].startswith("http://127.0.0.1:")


def test_the_client_saw_no_protocol_errors(session: Session) -> None:
    """Runs last in each session: nothing the server sent (stdout junk, stray progress) upset the client."""
    diagnostics = session.client.request("diagnostics")
    assert diagnostics["cancelledRequests"], "the cancellation test ran in this session"
    assert unexplained_errors(diagnostics) == []
    # The server never reports progress on a request it has answered (a cancelled one may cross on the wire).
    late = [e for e in diagnostics["progressAfterResponse"] if e["token"] not in diagnostics["cancelledRequests"]]
    assert late == []


def test_stdio_local_newcomer_session(tmp_path: Path) -> None:
    """``fal-mcp --local`` exactly as a host launches it (the console script, the embedded emulator, no key)."""
    script = str(Path(sys.executable).with_name("fal-mcp"))
    with stdio_session(tmp_path, [script, "--local"], FAL_MCP_EMULATOR_TIME_SCALE="0.02") as client:
        assert client.connected["protocolVersion"] == SDK_LATEST
        assert {tool["name"] for tool in client.tools} == ALL_TOOLS
        found = client.call("model_search", {"query": "flux"}).structured
        assert "fal-ai/flux/dev" in [m["endpoint_id"] for m in found["models"]]
        args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a newcomer's first picture"}}
        call = client.call("fal_subscribe", args)
        assert call.structured["status"] == "COMPLETED"
        assert len(call.sent) >= 3 and call.sent_messages()[-1] == "completed"
        diagnostics = client.request("diagnostics")
    assert unexplained_errors(diagnostics) == []
    assert all(json.loads(line) for line in diagnostics["serverStderr"].splitlines() if line.strip())  # JSON logs


@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26"])
def test_older_protocol_versions_negotiate(tmp_path: Path, version: str) -> None:
    """Hosts on older SDKs offer older versions; the server agrees to them and tools still validate."""
    command = [sys.executable, "-m", "fal_mcp", "--local"]
    with stdio_session(tmp_path, command, protocol_version=version, FAL_MCP_EMULATOR_TIME_SCALE="0.02") as client:
        assert client.connected["protocolVersion"] == version
        assert client.call("model_search", {"query": "flux", "limit": 1}).structured["models"]
