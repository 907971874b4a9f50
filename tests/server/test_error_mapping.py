"""Every failure becomes an actionable, redacted error result with a declared kind — never a traceback."""

from __future__ import annotations

import pytest

from fal_mcp.config import ConfigError
from fal_mcp.fal import errors as fe
from fal_mcp.guards import GuardError
from fal_mcp.redact import register_secret
from fal_mcp.server.errors import ERROR_KINDS, ToolFailure, failure_result, tool_errors
from tests.server.helpers import error_of

SECRET = "kid-abcdef:sec-0123456789abcdef0123"


def _detail(loc: list[str], error_type: str) -> dict:
    return {"detail": [{"loc": loc, "msg": "rejected", "type": error_type}]}


CASES: list[tuple[BaseException, str]] = [
    (fe.NotConfiguredError("no key"), "not_configured"),
    (fe.InvalidEndpointIdError("bad id"), "invalid_argument"),
    (fe.FalConnectionError("down"), "network"),
    (fe.FalTimeoutError("slow"), "network"),
    (fe.SubmitOutcomeUnknownError("lost", endpoint_id="a/b", input_digest="x", sent_at=0.0), "submit_outcome_unknown"),
    (fe.make_api_error(401, {}, {"detail": "invalid key credentials"}), "auth"),
    (fe.make_api_error(403, {}, {"detail": "scope"}), "forbidden"),
    (fe.make_api_error(404, {}, {"detail": "nope"}), "not_found"),
    (
        fe.make_api_error(422, {}, {"detail": [{"loc": ["body", "x"], "msg": "bad", "type": "less_than"}]}),
        "invalid_input",
    ),
    (fe.make_api_error(422, {}, _detail(["body"], "content_policy_violation")), "content_policy"),
    (fe.make_api_error(429, {"retry-after": "3"}, {"detail": "slow down"}), "rate_limited"),
    (fe.make_api_error(504, {"x-fal-request-timeout-type": "user"}, {"detail": "late"}), "start_timeout"),
    (fe.make_api_error(499, {}, {"detail": "x", "error_type": "client_cancelled"}), "cancelled"),
    (fe.make_api_error(503, {}, None, "<html>nginx</html>"), "fal_unavailable"),
    (fe.make_api_error(500, {"x-fal-request-id": "r"}, {"detail": "boom"}), "fal_error"),
    (GuardError("refused: outside the roots"), "refused"),
    (ConfigError("FAL_MCP_WAIT_SECONDS must be a number"), "config"),
    (ToolFailure("too expensive", kind="cost_limit"), "cost_limit"),
    (RuntimeError(f"kaboom {SECRET}"), "internal"),
]


@pytest.mark.parametrize(("exc", "kind"), CASES, ids=[k for _, k in CASES])
def test_each_failure_maps_to_its_kind(exc: BaseException, kind: str) -> None:
    register_secret(SECRET)
    result = failure_result(exc, "some_tool")
    error = error_of(result)
    assert result.is_error and error["kind"] == kind and kind in ERROR_KINDS
    text = result.content[0].text
    assert text and "Traceback" not in text and SECRET not in text and SECRET not in str(error)
    if kind == "internal":
        assert error["incident"] in text and "kaboom" not in text  # crash details stay in the server log


def test_undeclared_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown error kind"):
        ToolFailure("x", kind="made_up")


@pytest.mark.anyio
async def test_tool_errors_turns_exceptions_into_results_but_lets_cancellation_through() -> None:
    import anyio

    @tool_errors
    async def broken() -> None:
        raise fe.NotFoundError("no model 'x'", status_code=404)

    result = await broken()
    assert result.is_error and error_of(result)["kind"] == "not_found"

    @tool_errors
    async def slow() -> None:
        await anyio.sleep(10)

    with anyio.move_on_after(0.05) as scope:
        await slow()
    assert scope.cancelled_caught
