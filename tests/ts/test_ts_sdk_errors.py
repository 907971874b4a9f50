"""Every tool's error paths through the official TypeScript MCP SDK client, over stdio and streamable HTTP.

``callTool`` in that client validates ``structuredContent`` against the tool's ``outputSchema`` even when
``isError`` is true, so an error whose structured part matches no schema is thrown away and the host shows
``MCP error -32602`` instead. Each error here must come back as a result, readable from its first text
block alone (all Claude Code, Codex and opencode show the model of an error): the kind, what went wrong,
the ids it concerns and what to do next.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from tests.server.test_transports import SERVER_KEY
from tests.ts.conftest import ALL_TOOLS, Session, ToolCall, first_text, stdio_session

UNKNOWN_REQUEST = "00000000-0000-4000-8000-000000000000"
SERVER_COMMAND = [sys.executable, "-m", "fal_mcp"]


def assert_readable(call: ToolCall, kind: str, *needles: str) -> str:
    """The first text block names the kind, each needle (fields, ids, allowed values) and a next step."""
    text = first_text(call)
    assert kind in text, f"kind {kind!r} not in {text!r}"
    missing = [needle for needle in needles if needle not in text]
    assert not missing, f"{missing} not in {text!r}"
    assert "next step" in text.lower(), f"no next step in {text!r}"
    assert "Traceback" not in text
    return text


# (tool, arguments, kind, what the text must name)
CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("model_search", {"limit": 0}, "invalid_argument", ("limit",)),
    ("model_schema", {"endpoint_id": "fal-ai/no-such-model"}, "not_found", ("fal-ai/no-such-model", "model_search")),
    ("model_schema", {"endpoint_id": "https://evil.example/x"}, "invalid_argument", ("https://evil.example/x",)),
    (
        "fal_subscribe",
        {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}, "wait_seconds": "soon"},
        "invalid_argument",
        ("wait_seconds",),
    ),
    ("fal_subscribe", {"input": {"prompt": "x"}}, "invalid_argument", ("endpoint_id",)),
    ("queue_submit", {"endpoint_id": "fal-ai/no-such-model", "input": {}}, "not_found", ("fal-ai/no-such-model",)),
    ("queue_status", {"request_id": UNKNOWN_REQUEST}, "invalid_argument", (UNKNOWN_REQUEST, "endpoint_id")),
    ("queue_status", {"request_id": UNKNOWN_REQUEST, "endpoint_id": "emulator/slow"}, "not_found", (UNKNOWN_REQUEST,)),
    ("queue_result", {"request_id": UNKNOWN_REQUEST, "endpoint_id": "emulator/slow"}, "not_found", (UNKNOWN_REQUEST,)),
    ("queue_cancel", {"request_id": UNKNOWN_REQUEST, "endpoint_id": "emulator/slow"}, "not_found", (UNKNOWN_REQUEST,)),
    ("jobs_list", {"status": "bogus"}, "invalid_argument", ("status", "running")),
    ("fal_run", {"endpoint_id": "fal-ai/no-such-model", "input": {}}, "not_found", ("fal-ai/no-such-model",)),
    ("fal_stream", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}}, "not_found", ("fal-ai/flux/dev",)),
    (
        "fal_realtime",
        {"endpoint_id": "fal-ai/flux/dev", "inputs": [{"prompt": "x"}]},
        "not_found",
        ("fal-ai/flux/dev",),
    ),
    ("upload_file", {"path": "/etc/passwd"}, "refused", ("/etc/passwd",)),
    ("upload_file", {}, "invalid_argument", ("path", "url", "data")),
]


@pytest.mark.parametrize(("tool", "arguments", "kind", "needles"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_error_is_returned_and_readable(
    session: Session, tool: str, arguments: dict[str, Any], kind: str, needles: tuple[str, ...]
) -> None:
    assert_readable(session.client.call(tool, arguments), kind, *needles)


def test_an_unknown_tool_is_not_found_and_names_the_real_tools(session: Session) -> None:
    text = assert_readable(session.client.call("fal_generate", {"prompt": "x"}), "not_found", "fal_generate")
    assert all(name in text for name in ALL_TOOLS), text


def test_invalid_model_input_names_each_field_and_is_never_submitted(session: Session) -> None:
    data = {"prompt": f"x ({session.name})", "num_inference_steps": 500, "output_format": "gif"}
    call = session.client.call("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    text = assert_readable(call, "invalid_input", "num_inference_steps", "50", "output_format", "png", "jpeg")
    assert "nothing was submitted" in text.lower()
    assert session.emulator.state.submissions[f"fal-ai/flux/dev {input_digest(data)}"] == 0


def test_a_failed_job_names_its_request_id(session: Session) -> None:
    data = {"seconds": 1, "steps": 1, "fail": True, "fail_with": "runner_disconnected", "label": session.name}
    call = session.client.call("fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
    jobs = session.client.call("jobs_list", {"status": "FAILED", "limit": 200}).structured["jobs"]
    (job,) = [
        job for job in jobs if session.name in (job["input_preview"] or "") and '"fail":true' in job["input_preview"]
    ]
    assert_readable(call, "fal_error", job["request_id"], "emulator/slow", "runner_disconnected")


def test_without_a_key_paid_tools_say_how_to_fix_it(tmp_path: Path, emulator: EmulatorServer) -> None:
    """No FAL_KEY and no --local: discovery works, a paid call tells the model what the user must set."""
    with stdio_session(tmp_path, SERVER_COMMAND, FAL_MCP_BASE_URL=emulator.base_url) as client:
        assert client.call("model_search", {"query": "flux"}).structured["models"]
        paid = client.call("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}})
        assert_readable(paid, "not_configured", "FAL_KEY")


def test_cost_limit_refusal_names_the_estimate_and_the_setting(tmp_path: Path, emulator: EmulatorServer) -> None:
    env = {"FAL_MCP_BASE_URL": emulator.base_url, "FAL_KEY": SERVER_KEY, "FAL_MCP_MAX_COST_USD": "0.01"}
    data = {"prompt": "four big pictures (ts)", "image_size": "square_hd", "num_images": 4}
    with stdio_session(tmp_path, SERVER_COMMAND, **env) as client:
        refused = client.call("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data})
    assert_readable(refused, "cost_limit", "FAL_MCP_MAX_COST_USD", "$")
    assert emulator.state.submissions[f"fal-ai/flux/dev {input_digest(data)}"] == 0


def test_every_tool_has_an_error_case() -> None:
    assert {case[0] for case in CASES} == ALL_TOOLS
