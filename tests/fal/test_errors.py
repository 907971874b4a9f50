"""make_api_error: fal's error answers → the exception tree (status, error_type, ingress, shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from fal_mcp.fal.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContentPolicyError,
    FalAPIError,
    FalError,
    IngressError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestCancelledError,
    ServerError,
    StartTimeoutError,
    ValidationError,
    error_from_status_payload,
    make_api_error,
)
from fal_mcp.redact import register_secret

RID = {"x-fal-request-id": "6f1f0c52-1111-4222-8333-944445555666"}
NGINX = "<html><head><title>503 Service Temporarily Unavailable</title></head><center>nginx</center></html>"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (422, ValidationError),
        (429, RateLimitError),
        (499, RequestCancelledError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (418, FalAPIError),
    ],
)
def test_status_maps_to_class(status: int, cls: type[FalAPIError]) -> None:
    error = make_api_error(status, RID, {"detail": "nope"}, '{"detail": "nope"}')
    assert type(error) is cls and error.status_code == status
    assert error.message == "nope" and error.request_id == RID["x-fal-request-id"]


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (422, "content_policy_violation", ContentPolicyError),
        (499, "client_cancelled", RequestCancelledError),
        (499, "client_disconnected", RequestCancelledError),
        (429, "concurrent_requests_limit", RateLimitError),
        (503, "runner_disconnected", ServerError),
        (400, "bad_request", BadRequestError),
    ],
)
def test_error_type_maps_to_class(status: int, error_type: str, cls: type[FalAPIError]) -> None:
    from_body = make_api_error(status, RID, {"detail": "x", "error_type": error_type})
    from_header = make_api_error(status, {**RID, "X-Fal-Error-Type": error_type}, {"detail": "x"})
    for error in (from_body, from_header):
        assert type(error) is cls and error.error_type == error_type


def test_content_policy_in_a_detail_list() -> None:
    body = {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}
    error = make_api_error(422, RID, body)
    assert isinstance(error, ContentPolicyError) and isinstance(error, ValidationError)
    assert error.error_type == "content_policy_violation" and error.errors[0].field_path == "prompt"


def test_ingress_errors_are_told_apart_from_fal_answers() -> None:
    ingress = make_api_error(503, {"content-type": "text/html"}, None, NGINX)
    assert isinstance(ingress, IngressError) and ingress.request_id is None
    assert "did not reach fal" in ingress.message and "<html>" not in ingress.message
    assert type(make_api_error(503, RID, None, NGINX)) is ServerError  # fal itself answered
    assert type(make_api_error(502, {}, None, "Bad Gateway")) is ServerError  # no nginx page


def test_user_start_timeout() -> None:
    headers = {**RID, "X-Fal-Request-Timeout-Type": "user"}
    error = make_api_error(504, headers, {"detail": "Request timed out", "error_type": "startup_timeout"})
    assert isinstance(error, StartTimeoutError) and error.error_type == "startup_timeout"
    assert type(make_api_error(504, RID, {"detail": "Request timed out"})) is ServerError


def test_platform_api_error_shape() -> None:
    body = {"error": {"type": "not_found", "message": "Model 'x/y' not found", "docs_url": "https://fal.ai/docs"}}
    error = make_api_error(404, {}, body)
    assert isinstance(error, NotFoundError) and error.message == "Model 'x/y' not found"
    assert error.error_type == "not_found"
    limited = make_api_error(429, {"retry-after": "7"}, {"error": {"type": "rate_limited", "message": "slow down"}})
    assert isinstance(limited, RateLimitError) and limited.retry_after == 7.0


def test_detail_list_gives_field_errors_with_paths_and_context() -> None:
    body: dict[str, Any] = {
        "detail": [
            {
                "loc": ["body", "image_size", "width"],
                "msg": "Input should be less than or equal to 4096",
                "type": "less_than_equal",
                "ctx": {"le": 4096},
                "input": 9000,
            },
            {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"},
            {"loc": ["body", "loras", 0, "scale"], "msg": "bad", "type": "greater_than", "ctx": {"gt": 0}},
        ]
    }
    error = make_api_error(422, RID, body)
    assert isinstance(error, ValidationError)
    assert [e.field_path for e in error.errors] == ["image_size.width", "prompt", "loras.0.scale"]
    assert error.errors[0].ctx == {"le": 4096} and error.errors[0].input == 9000
    assert error.message.startswith("image_size.width: Input should be less than or equal to 4096 (le=4096)")
    assert "prompt: Field required" in error.message


def test_string_detail_is_one_field_error_on_the_body() -> None:
    error = make_api_error(422, RID, {"detail": "Prompt is too long"})
    assert isinstance(error, ValidationError) and error.message == "Prompt is too long"
    assert [(e.loc, e.msg, e.field_path) for e in error.errors] == [(("body",), "Prompt is too long", "(input)")]


def test_non_json_bodies_and_bare_statuses() -> None:
    assert make_api_error(500, RID, None, "Internal Server Error").message == "Internal Server Error"
    assert make_api_error(500, RID, None, "").message == "HTTP 500"
    cancel = make_api_error(400, RID, {"status": "ALREADY_COMPLETED"})
    assert isinstance(cancel, BadRequestError) and cancel.message == "ALREADY_COMPLETED"


def test_failed_status_payloads_become_errors() -> None:
    cases = [
        ("request_timeout", ServerError, 504),
        ("runner_disconnected", ServerError, 503),
        ("runner_incomplete_response", ServerError, 502),
        ("startup_timeout", StartTimeoutError, 504),
        ("client_cancelled", RequestCancelledError, 499),
        ("bad_request", BadRequestError, 400),
    ]
    for error_type, cls, status in cases:
        status_body = {"status": "COMPLETED", "request_id": "r-12345678", "error": "boom", "error_type": error_type}
        error = error_from_status_payload(status_body)
        assert type(error) is cls and error.status_code == status
        assert error.request_id == "r-12345678" and error.message == "boom"


def test_messages_are_redacted() -> None:
    secret = "sk-live-0123456789abcdef"
    register_secret(secret)
    error = make_api_error(401, RID, {"detail": f"invalid key {secret}"})
    assert secret not in str(error) and secret not in repr(error) and "[REDACTED]" in error.message
    assert secret not in str(FalError(f"Authorization: Key {secret}"))
    assert "abc.def.ghijklmnop" not in str(FalError("header Bearer abc.def.ghijklmnop"))
