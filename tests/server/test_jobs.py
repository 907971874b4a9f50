"""fal_subscribe and the queue tools against the emulator: progress, bounded waits, cancellation,
restarts, re-attachment, validation before spending."""

from __future__ import annotations

import base64
import io

import anyio
import pytest
from mcp import Client
from PIL import Image

from fal_mcp.config import Settings
from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.ledger import Ledger
from fal_mcp.server.app import FalMCPServer, build_server
from tests.server.conftest import TEST_KEY, make_server, owner_of
from tests.server.helpers import Progress, call, error_of, eventually, structured, text_of

pytestmark = pytest.mark.anyio


def submissions(emulator: EmulatorServer, endpoint: str, data: dict) -> int:
    """How many times the emulator accepted this exact body (its defaults are not applied to the digest)."""
    return emulator.state.submissions[f"{endpoint} {input_digest(data)}"]


async def test_subscribe_returns_output_files_links_and_thumbnail(
    server: FalMCPServer, emulator: EmulatorServer, mode: str
) -> None:
    data = {"prompt": f"a lighthouse at dusk ({mode})", "image_size": {"width": 640, "height": 480}, "seed": 7}
    progress = Progress()
    async with Client(server, mode=mode) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data}, progress)
        await progress.wait_until(lambda events: any(m == "completed" for _, _, m in events))  # may trail the result
    assert not result.is_error, text_of(result)
    job = structured(result)
    assert job["status"] == "COMPLETED"
    assert job["request_id"] and job["endpoint_id"] == "fal-ai/flux/dev"
    image = job["output"]["images"][0]
    assert (image["width"], image["height"]) == (640, 480)
    assert job["files"][0]["url"] == image["url"]
    kinds = [block.type for block in result.content]
    assert kinds[0] == "text" and "resource_link" in kinds and "image" in kinds
    link = next(b for b in result.content if b.type == "resource_link")
    assert link.uri == image["url"] and link.mime_type.startswith("image/")
    thumb = next(b for b in result.content if b.type == "image")
    raw = base64.b64decode(thumb.data)
    assert len(raw) <= 100_000
    with Image.open(io.BytesIO(raw)) as preview:
        assert max(preview.size) <= 512 and preview.size[0] > preview.size[1]  # keeps the aspect ratio
    progress.assert_strictly_increasing()
    assert any("completed" in m for m in progress.messages)
    assert submissions(emulator, "fal-ai/flux/dev", data) == 1


async def test_bounded_wait_returns_request_id_and_queue_result_finishes(
    server: FalMCPServer, emulator: EmulatorServer, settings: Settings
) -> None:
    data = {"seconds": 60, "steps": 6}  # 1.2 s real at time_scale 0.02
    async with Client(server) as client:
        args = {"endpoint_id": "emulator/slow", "input": data, "wait_seconds": 0.3}
        first = await call(client, "fal_subscribe", args)
        assert not first.is_error, text_of(first)
        job = structured(first)
        assert job["status"] in ("IN_QUEUE", "IN_PROGRESS")
        assert job["request_id"] and "queue_result" in job["next_step"]
        progress = Progress()
        done = await call(client, "queue_result", {"request_id": job["request_id"]}, progress)
    assert not done.is_error, text_of(done)
    assert structured(done)["status"] == "COMPLETED"
    assert structured(done)["output"]["steps"] == 6
    assert any(m.startswith("step ") for m in progress.messages)
    assert submissions(emulator, "emulator/slow", data) == 1


async def test_heartbeats_keep_a_quiet_job_alive(server: FalMCPServer) -> None:
    data = {"seconds": 50, "steps": 1}  # one log line at the very end: ~1 s of silence
    progress = Progress()
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}, progress)
    assert not result.is_error, text_of(result)
    heartbeats = [m for m in progress.messages if m.startswith("still working")]
    assert len(heartbeats) >= 2, progress.messages
    progress.assert_strictly_increasing()


async def test_client_cancel_cancels_the_fal_request(server: FalMCPServer, emulator: EmulatorServer, mode: str) -> None:
    data = {"seconds": 500, "steps": 49 if mode == "auto" else 48}  # a distinct body per era
    async with Client(server, mode=mode) as client:
        with anyio.CancelScope() as waiting:  # the client gives up once fal has the job (a condition, not a timer)

            async def cancel_once_queued(progress: float, total: float | None, message: str | None) -> None:
                if message and message.startswith(("queued", "running")):
                    waiting.cancel()

            await client.call_tool(
                "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}, progress_callback=cancel_once_queued
            )
        with anyio.fail_after(10):
            while True:  # the server cancels the fal job, then records it
                jobs = structured(await call(client, "jobs_list", {"endpoint_id": "emulator/slow", "limit": 50}))
                mine = [j for j in jobs["jobs"] if f'"steps":{data["steps"]}' in (j["input_preview"] or "")]
                if mine and mine[0]["status"] == "CANCELLED":
                    break
                await anyio.sleep(0.05)
    job = mine[0]
    record = emulator.state.queue.get(job["request_id"])
    assert record is not None and record.status == "COMPLETED"
    assert record.error_type == "client_cancelled"


async def test_keep_running_on_client_cancel_when_configured(settings: Settings, emulator: EmulatorServer) -> None:
    server = make_server(settings, on_client_cancel="keep")
    data = {"seconds": 40, "steps": 4}
    async with Client(server) as client:
        with anyio.CancelScope() as waiting:  # the client gives up once fal has the job (a condition, not a timer)

            async def cancel_once_queued(progress: float, total: float | None, message: str | None) -> None:
                if message and message.startswith(("queued", "running")):
                    waiting.cancel()

            await client.call_tool(
                "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data}, progress_callback=cancel_once_queued
            )
        jobs = structured(await call(client, "jobs_list", {}))["jobs"]
        request_id = jobs[0]["request_id"]
        done = await call(client, "queue_result", {"request_id": request_id})
    assert structured(done)["status"] == "COMPLETED"


async def test_restart_resumes_from_the_ledger(settings: Settings, emulator: EmulatorServer) -> None:
    data = {"seconds": 20, "steps": 2, "fail": False}
    async with Client(build_server(settings, credentials=credentials_from_key(TEST_KEY))) as client:
        submitted = structured(await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": data}))
    # A new server process (same ledger file) knows the job: no endpoint id needed.
    async with Client(build_server(settings, credentials=credentials_from_key(TEST_KEY))) as client:
        listed = structured(await call(client, "jobs_list", {"status": "running"}))["jobs"]
        assert submitted["request_id"] in [j["request_id"] for j in listed]
        result = await call(client, "queue_result", {"request_id": submitted["request_id"]})
    assert structured(result)["status"] == "COMPLETED"
    async with Ledger.open(settings.ledger_path) as ledger:
        rows = await ledger.list(owner_of(settings), status="finished")
    assert any(r.request_id == submitted["request_id"] and r.status == "COMPLETED" for r in rows)


async def test_identical_subscribe_reattaches_instead_of_paying_again(
    server: FalMCPServer, emulator: EmulatorServer
) -> None:
    data = {"prompt": "re-attach me", "seed": 11, "image_size": "square"}
    args = {"endpoint_id": "fal-ai/flux/dev", "input": data}
    async with Client(server) as client:
        first = structured(await call(client, "fal_subscribe", args))
        second = structured(await call(client, "fal_subscribe", args))
        assert second["reattached"] is True and second["request_id"] == first["request_id"]
        assert submissions(emulator, "fal-ai/flux/dev", data) == 1
        third = structured(await call(client, "fal_subscribe", {**args, "fresh": True}))
    assert third["reattached"] is False and third["request_id"] != first["request_id"]
    assert submissions(emulator, "fal-ai/flux/dev", data) == 2


async def test_concurrent_duplicate_reattaches_to_the_running_job(
    server: FalMCPServer, emulator: EmulatorServer
) -> None:
    data = {"seconds": 30, "steps": 3, "fail": False}
    args = {"endpoint_id": "emulator/slow", "input": data}
    async with Client(server) as client:
        first = structured(await call(client, "fal_subscribe", {**args, "wait_seconds": 0.2}))
        second = structured(await call(client, "fal_subscribe", args))
    assert second["reattached"] and second["request_id"] == first["request_id"]
    assert second["status"] == "COMPLETED"
    assert submissions(emulator, "emulator/slow", data) == 1


async def test_invalid_input_is_refused_before_any_submission(server: FalMCPServer, emulator: EmulatorServer) -> None:
    data = {"prompt": "x", "num_inference_steps": 500, "output_format": "gif"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    error = error_of(result)
    assert error["kind"] == "invalid_input"
    fields = {f["field"]: f for f in error["fields"]}
    assert fields["num_inference_steps"]["rule"] == "maximum" and fields["num_inference_steps"]["allowed"]
    assert fields["output_format"]["rule"] == "enum" and "png" in fields["output_format"]["allowed"]
    assert "nothing was submitted" in text_of(result)
    assert submissions(emulator, "fal-ai/flux/dev", data) == 0


async def test_fal_validation_errors_come_back_the_same_way(server: FalMCPServer, settings: Settings) -> None:
    """Input that passes the schema but fails the model's own rule: fal's 422 shape, mapped the same way."""
    server = make_server(settings, validate_input=False)
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "emulator/strict", "input": {}})
    error = error_of(result)
    assert error["kind"] == "invalid_input" and error["request_id"]
    assert error["fields"] and all(f["field"] and f["rule"] for f in error["fields"])


async def test_failed_job_is_an_error_with_its_request_id(server: FalMCPServer) -> None:
    data = {"seconds": 1, "steps": 1, "fail": True, "fail_with": "runner_disconnected"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
        error = error_of(result)
        assert error["request_id"] and error["error_type"] == "runner_disconnected"
        jobs = structured(await call(client, "jobs_list", {"status": "FAILED"}))["jobs"]
    assert error["request_id"] in [j["request_id"] for j in jobs]


async def test_status_and_cancel_tools(server: FalMCPServer, emulator: EmulatorServer) -> None:
    async with Client(server) as client:
        sub = structured(
            await call(client, "queue_submit", {"endpoint_id": "emulator/slow", "input": {"seconds": 300, "steps": 30}})
        )
        status = structured(await call(client, "queue_status", {"request_id": sub["request_id"], "logs": True}))
        assert status["status"] in ("IN_QUEUE", "IN_PROGRESS")
        cancelled = structured(await call(client, "queue_cancel", {"request_id": sub["request_id"]}))
        assert cancelled["outcome"] == "CANCELLATION_REQUESTED"

        async def settled() -> bool:
            status = structured(await call(client, "queue_status", {"request_id": sub["request_id"]}))["status"]
            return status in ("COMPLETED", "FAILED", "CANCELLED")

        await eventually(settled)  # fal has acted on the cancellation (a condition, not a timer)
        again = structured(await call(client, "queue_cancel", {"request_id": sub["request_id"]}))
        assert again["outcome"] == "ALREADY_COMPLETED"
        unknown = await call(client, "queue_status", {"request_id": "00000000-0000-4000-8000-000000000000"})
        assert error_of(unknown)["kind"] == "invalid_argument"  # not in the ledger and no endpoint given
        unknown = await call(
            client,
            "queue_status",
            {"request_id": "00000000-0000-4000-8000-000000000000", "endpoint_id": "emulator/slow"},
        )
        assert error_of(unknown)["kind"] == "not_found"


async def test_cost_limit_refuses_expensive_calls(settings: Settings, emulator: EmulatorServer) -> None:
    server = make_server(settings, max_cost_usd=0.01)
    data = {"prompt": "big", "image_size": "square_hd", "num_images": 4}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    error = error_of(result)
    assert error["kind"] == "cost_limit" and error["cost_estimate_usd"] > 0.01
    assert "FAL_MCP_MAX_COST_USD" in text_of(result)
    assert submissions(emulator, "fal-ai/flux/dev", data) == 0


async def test_local_file_in_a_file_field_is_uploaded(server: FalMCPServer, workdir) -> None:
    Image.new("RGB", (96, 64), (200, 30, 30)).save(workdir / "cat.png")
    data = {"image_url": "./cat.png", "prompt": "make it blue", "strength": 0.5, "seed": 3}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev/image-to-image", "input": data})
    assert not result.is_error, text_of(result)
    image = structured(result)["output"]["images"][0]
    assert (image["width"], image["height"]) == (96, 64)


async def test_download_dir_saves_outputs_inside_the_workspace(server: FalMCPServer, workdir) -> None:
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "save me", "seed": 5}, "download_dir": "out"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
        saved = structured(result)["files"][0]["saved_path"]
        assert saved.startswith(str(workdir / "out"))
        with Image.open(saved) as image:
            assert image.size[0] > 0
        escape = await call(client, "fal_subscribe", {**args, "download_dir": "../outside", "fresh": True})
    assert error_of(escape)["kind"] == "refused"


async def test_restart_reconciles_submits_whose_answer_was_lost(settings: Settings, emulator: EmulatorServer) -> None:
    """A previous process wrote its intents, sent one submit, and died before fal answered either."""
    from fal_mcp.fal.client import FalClient

    landed = {"seconds": 1.25, "steps": 1}
    lost = {"seconds": 2.75, "steps": 1}
    async with Ledger.open(settings.ledger_path) as ledger:
        await ledger.record_intent("emulator/slow", owner_of(settings), landed, "fal_subscribe")
        await ledger.record_intent("emulator/slow", owner_of(settings), lost, "fal_subscribe")
    async with FalClient(credentials=credentials_from_key(TEST_KEY), hosts=settings.hosts) as fal:
        handle = await fal.queue.submit("emulator/slow", landed)  # it reached fal; the answer never got written
    async with Client(make_server(settings)) as client:
        for _ in range(50):
            jobs = structured(await call(client, "jobs_list", {"endpoint_id": "emulator/slow"}))["jobs"]
            landed_found = all(j["request_id"] for j in jobs if "1.25" in j["input_preview"])
            if all(j["status"] != "SUBMITTING" for j in jobs) and landed_found:
                break
            await anyio.sleep(0.1)
        by_seconds = {('"seconds":1.25' in j["input_preview"]): j for j in jobs}
        assert by_seconds[True]["request_id"] == handle.request_id
        # Not in fal's history: that proves nothing (fal lists requests once finished), so it is UNKNOWN, not FAILED.
        assert by_seconds[False]["status"] == "UNKNOWN" and "outcome unknown" in by_seconds[False]["error"]
        assert by_seconds[False]["job_id"]
        done = await call(client, "queue_result", {"request_id": handle.request_id})
    assert structured(done)["status"] == "COMPLETED"
    assert submissions(emulator, "emulator/slow", landed) == 1 and submissions(emulator, "emulator/slow", lost) == 0


async def test_zero_wait_still_reports_the_real_state(server: FalMCPServer) -> None:
    async with Client(server) as client:
        submit = {"endpoint_id": "emulator/slow"}
        quick = structured(await call(client, "queue_submit", {**submit, "input": {"seconds": 1}}))
        slow = structured(await call(client, "queue_submit", {**submit, "input": {"seconds": 300}}))

        async def status(request_id: str) -> str:
            return structured(await call(client, "queue_status", {"request_id": request_id}))["status"]

        async def quick_done_slow_running() -> bool:
            return (
                await status(quick["request_id"]) == "COMPLETED" and await status(slow["request_id"]) == "IN_PROGRESS"
            )

        await eventually(quick_done_slow_running)
        done = structured(await call(client, "queue_result", {"request_id": quick["request_id"], "wait_seconds": 0}))
        running = structured(await call(client, "queue_result", {"request_id": slow["request_id"], "wait_seconds": 0}))
        await call(client, "queue_cancel", {"request_id": slow["request_id"]})
    assert done["status"] == "COMPLETED" and done["output"]["seconds"] == 1
    assert running["status"] == "IN_PROGRESS" and running["request_id"] == slow["request_id"]


async def test_identical_calls_racing_each_other_pay_once(server: FalMCPServer, emulator: EmulatorServer) -> None:
    data = {"seconds": 15, "steps": 3, "fail": False}
    results: list[dict] = []

    async def one(client: Client) -> None:
        results.append(structured(await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})))

    async with Client(server) as client, anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one, client)
    assert [r["status"] for r in results] == ["COMPLETED"] * 3
    assert len({r["request_id"] for r in results}) == 1 and sum(r["reattached"] for r in results) == 2
    assert submissions(emulator, "emulator/slow", data) == 1
