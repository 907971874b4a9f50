"""Error results every client can read: the real kind (never ``internal`` for a diagnosable failure), one
self-sufficient text block, no ``structuredContent`` (the TypeScript SDK validates it against outputSchema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal import errors as fe
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.server.app import FalMCPServer
from fal_mcp.server.errors import describe, failure_result
from tests.emulators import shared_emulator
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio

UNKNOWN_REQUEST = "00000000-0000-4000-8000-000000000000"


def test_exception_groups_are_unwrapped_to_their_real_kind() -> None:
    """A failure raised inside a task group (heartbeat, realtime) keeps its kind and request id."""
    inner = fe.NotFoundError("no request", status_code=404, request_id="req-1")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    kind, _message, details = describe(nested)
    assert kind == "not_found" and details["request_id"] == "req-1"
    crash_then_real = ExceptionGroup("g", [RuntimeError("bug"), fe.ContentPolicyError("no", status_code=422)])
    assert describe(crash_then_real)[0] == "content_policy"
    result = failure_result(ExceptionGroup("g", [inner]), "queue_result")
    assert error_of(result)["kind"] == "not_found" and "internal" not in text_of(result)


@pytest.mark.parametrize(
    ("tool", "args", "kind"),
    [
        ("fal_run", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a forbidden thing"}}, "content_policy"),
        ("fal_run", {"endpoint_id": "fal-ai/no-such-model", "input": {"prompt": "x"}}, "not_found"),
        ("queue_result", {"request_id": UNKNOWN_REQUEST, "endpoint_id": "fal-ai/flux/dev"}, "not_found"),
        ("fal_stream", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "x"}}, "not_found"),
        ("fal_realtime", {"endpoint_id": "fal-ai/flux/dev", "inputs": [{"prompt": "x"}]}, "not_found"),
        ("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "a forbidden one"}}, "content_policy"),
    ],
    ids=[
        "run-policy",
        "run-unknown-model",
        "result-unknown-request",
        "stream-none",
        "realtime-none",
        "subscribe-policy",
    ],
)
async def test_failures_during_a_wait_keep_their_kind(
    server: FalMCPServer, mode: str, tool: str, args: dict, kind: str
) -> None:
    async with Client(server, mode=mode) as client:
        result = await call(client, tool, args)
    error = error_of(result)
    assert error["kind"] == kind, text_of(result)
    text = text_of(result)
    assert f"[{kind}]" in text and "Next step:" in text and "Call it again" not in text
    assert args["endpoint_id"] in text  # the endpoint the call was about is named
    if tool == "queue_result":
        assert UNKNOWN_REQUEST in text and error["request_id"] == UNKNOWN_REQUEST


@pytest.fixture(scope="module")
def forgetful_emulator() -> Iterator[EmulatorServer]:
    """fal forgets finished results after half a second (it keeps them ~1 h)."""
    yield from shared_emulator(result_retention_seconds=0.5, large_result_retention_seconds=0.5)


async def test_subscribe_resubmits_when_the_reattached_job_expired(
    forgetful_emulator: EmulatorServer, settings: Settings, tmp_path: Path
) -> None:
    server = make_server(settings, hosts=FalHosts.for_base_url(forgetful_emulator.base_url))
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": "expires", "seed": 3}}
    async with Client(server) as client:
        first = structured(await call(client, "fal_subscribe", args))
        with anyio.fail_after(5):  # wait until fal has forgotten the result
            while True:
                status = await call(client, "queue_status", {"request_id": first["request_id"]})
                if status.is_error and error_of(status)["kind"] == "not_found":
                    break
                await anyio.sleep(0.05)
        again = await call(client, "fal_subscribe", args)
    assert not again.is_error, text_of(again)
    second = structured(again)
    assert second["status"] == "COMPLETED" and second["request_id"] != first["request_id"]
    assert second["cost_estimate_usd"] == first["cost_estimate_usd"]


@pytest.mark.parametrize(
    ("tool", "args", "field", "rule"),
    [
        ("fal_subscribe", {"input": {"prompt": "x"}}, "endpoint_id", "missing"),
        ("queue_result", {"request_id": 5}, "request_id", "string_type"),
        ("fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": "a cat"}, "input", "dict_type"),
        ("jobs_list", {"limit": 9999}, "limit", "less_than_equal"),
        ("queue_result", {"request_id": UNKNOWN_REQUEST, "wait_seconds": -1}, "wait_seconds", "greater_than_equal"),
        ("fal_subscribe", {"endpoint_id": "a/b", "input": {}, "priority": "urgent"}, "priority", "literal_error"),
    ],
)
async def test_argument_errors_name_the_field_and_rule(
    server: FalMCPServer, mode: str, tool: str, args: dict, field: str, rule: str
) -> None:
    async with Client(server, mode=mode) as client:
        result = await call(client, tool, args)
    error = error_of(result)
    assert error["kind"] == "invalid_argument"
    assert [(f["field"], f["rule"]) for f in error["fields"]] == [(field, rule)]
    text = text_of(result)
    assert field in text and rule in text and "Next step:" in text
    assert "pydantic" not in text and "Error executing tool" not in text
    if rule in ("less_than_equal", "greater_than_equal", "literal_error"):
        assert error["fields"][0]["allowed"] and str(error["fields"][0]["allowed"]) in text


async def test_model_input_errors_list_each_field_once_with_its_rule(server: FalMCPServer) -> None:
    """invalid_input lists each field with its rule and allowed values in the one text block."""
    args = {"endpoint_id": "fal-ai/flux/dev", "input": {"prompt": 5, "image_size": "giant"}}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
    error = error_of(result)
    text = text_of(result)
    assert error["kind"] == "invalid_input" and {f["field"] for f in error["fields"]} == {"prompt", "image_size"}
    assert "square_hd" in text and "- prompt:" in text and "- image_size:" in text
    assert text.count("square_hd") == 1  # said once, in the field list


def test_fal_field_errors_show_rule_and_allowed_values_once() -> None:
    """fal's own 422: each field with its rule and what is allowed (values or bounds), not repeated."""
    body = {
        "detail": [
            {
                "loc": ["body", "num_images"],
                "msg": "Input should be less than or equal to 4",
                "type": "less_than_equal",
                "ctx": {"le": 4},
            },
            {
                "loc": ["body", "image_size"],
                "msg": "Input should be 'square_hd' or 'square'",
                "type": "enum",
                "ctx": {"expected": "'square_hd' or 'square'"},
            },
        ]
    }
    result = failure_result(fe.make_api_error(422, {"x-fal-request-id": "req-9"}, body), "fal_subscribe")
    text = text_of(result)
    assert "- num_images: Input should be less than or equal to 4 (rule: less_than_equal; allowed: ≤ 4)" in text
    assert "allowed: 'square_hd' or 'square'" in text and "square_hd" not in text.splitlines()[0]  # listed once
    assert "request_id: req-9" in text and error_of(result)["fields"][0]["allowed"] == "≤ 4"
