"""RealtimeAPI against the emulator's WebSocket: tokens, msgpack frames, error frames, secrecy."""

from __future__ import annotations

import io

import pytest

from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import (
    AuthenticationError,
    BadRequestError,
    FalAPIError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from fal_mcp.fal.realtime import realtime_error

pytestmark = pytest.mark.anyio

LCM = "fal-ai/fast-lcm-diffusion"


async def test_two_inputs_in_order_over_one_connection_with_a_cached_token(fal: FalClient) -> None:
    before = fal.http.requests_sent
    outputs = await fal.realtime.run_many(
        LCM, [{"prompt": "a red fox", "seed": 1}, {"prompt": "a blue owl", "seed": 2}]
    )
    assert [o["prompt"] for o in outputs] == ["a red fox", "a blue owl"]
    assert all(o["images"][0]["url"] for o in outputs)
    assert fal.http.requests_sent - before == 2  # one token, one WebSocket for both inputs

    again = await fal.realtime.run_many(LCM, [{"prompt": "a green frog"}])
    assert again[0]["prompt"] == "a green frog"
    assert fal.http.requests_sent - before == 3  # the token was reused


async def test_error_frames_raise_mapped_errors_and_the_session_survives(fal: FalClient) -> None:
    async with fal.realtime.connect(LCM) as conn:
        with pytest.raises(ValidationError) as caught:
            await conn.run({"prompt": "x", "num_inference_steps": 99})
        assert [e.field_path for e in caught.value.errors] == ["num_inference_steps"]
        assert caught.value.errors[0].type == "less_than_equal"
        assert (await conn.run({"prompt": "still here"}))["prompt"] == "still here"


async def test_app_without_realtime_is_not_found(fal: FalClient) -> None:
    with pytest.raises(NotFoundError):
        async with fal.realtime.connect("emulator/slow") as conn:
            await conn.run({"seconds": 1})


def test_error_frame_mapping() -> None:
    cases = {
        "Unauthorized": AuthenticationError,
        "NOT_FOUND": NotFoundError,
        "INVALID_ARGUMENT": BadRequestError,
        "INTERNAL_ERROR": ServerError,
    }
    for code, cls in cases.items():
        error = realtime_error({"type": "x-fal-error", "error": code, "reason": "because"})
        assert type(error) is cls, code
        assert error.error_type == code and "because" in error.message
    error = realtime_error(
        {"type": "x-fal-error", "error": "VALIDATION_ERROR", "detail": [{"loc": ["body", "seed"], "msg": "bad"}]}
    )
    assert isinstance(error, ValidationError) and error.errors[0].field_path == "seed"
    assert isinstance(realtime_error({"status": "error", "error": "Unauthorized"}), FalAPIError)


async def test_token_never_reaches_logs_or_errors(fal: FalClient, log_output: io.StringIO) -> None:
    token = await fal.realtime.token(LCM)
    assert len(token) > 20
    await fal.realtime.run_many(LCM, [{"prompt": "quiet"}])
    with pytest.raises(NotFoundError) as caught:
        async with fal.realtime.connect("emulator/slow") as conn:
            await conn.recv()
    logged = log_output.getvalue()
    assert "fal.realtime.open" in logged  # the session was logged…
    assert token not in logged and token not in str(caught.value) and token not in repr(caught.value)  # …not the token
    assert "test-key-secret" not in logged
