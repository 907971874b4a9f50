"""One small exception tree for everything fal can answer, keyed by HTTP status and fal's ``error_type``.

Every error carries the status code, fal's error type and the request id when fal sent them, and its
message is already redacted, so it is safe to show to a user or a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fal_mcp.redact import redact, redact_value

# fal's documented docs URL for model errors; kept so messages can point at it.
ERRORS_DOC_URL = "https://docs.fal.ai/errors/"


class FalError(Exception):
    """Base of every error this package raises. ``request_id`` names the job when one is concerned."""

    request_id: str | None = None

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.message = redact(message)
        if request_id is not None:
            self.request_id = request_id
        super().__init__(self.message)


class NotConfiguredError(FalError):
    """No usable credentials: missing, empty, or an unexpanded ``${FAL_KEY}`` template."""


class InvalidArgumentError(FalError, ValueError):
    """An argument that can never work (e.g. a header value with a line break); raised before any request."""


class InvalidEndpointIdError(InvalidArgumentError):
    """The endpoint id cannot be a fal endpoint; raised before any request is made."""


class FalConnectionError(FalError):
    """fal could not be reached (DNS, connect, TLS, dropped connection).

    ``request_sent`` is False only when the request provably never left this machine.
    """

    def __init__(self, message: str, *, request_sent: bool = True, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.request_sent = request_sent


class FalTimeoutError(FalConnectionError):
    """fal did not answer in time."""


class SubmitOutcomeUnknownError(FalConnectionError):
    """A submit was sent but its answer was lost; fal may or may not have queued it.

    The client never re-sends such a submit blindly (that could charge twice). It reconciles
    through fal's request history first; this error means that reconciliation also failed.
    """

    def __init__(self, message: str, *, endpoint_id: str, input_digest: str, sent_at: float) -> None:
        super().__init__(message, request_sent=True)
        self.endpoint_id = endpoint_id
        self.input_digest = input_digest
        self.sent_at = sent_at


@dataclass(frozen=True)
class FieldError:
    """One validation problem, in fal's (FastAPI-style) ``detail`` shape."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"
    ctx: Mapping[str, Any] = field(default_factory=dict)
    input: Any = None

    @property
    def field_path(self) -> str:
        """``image_size.width`` style path without the leading ``body``."""
        parts = [str(p) for p in self.loc if p != "body"]
        return ".".join(parts) or "(input)"

    def describe(self) -> str:
        text = f"{self.field_path}: {self.msg}"
        if self.ctx:
            extras = ", ".join(f"{k}={v!r}" for k, v in self.ctx.items())
            text += f" ({extras})"
        return text


class FalAPIError(FalError):
    """fal answered with an error status."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        if status_code is not None:
            self.status_code = status_code
        self.error_type = error_type
        self.body = redact_value(body)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, error_type={self.error_type!r}, "
            f"request_id={self.request_id!r}, message={self.message!r})"
        )


class BadRequestError(FalAPIError):
    status_code = 400


class AuthenticationError(FalAPIError):
    status_code = 401


class PermissionDeniedError(FalAPIError):
    status_code = 403


class NotFoundError(FalAPIError):
    status_code = 404


class ConflictError(FalAPIError):
    status_code = 409


class PayloadTooLargeError(FalAPIError):
    status_code = 413


class ValidationError(FalAPIError):
    """422: the input was rejected; ``errors`` lists each field, its rule and its context."""

    status_code = 422

    def __init__(self, message: str, *, errors: list[FieldError] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = errors or []


class ContentPolicyError(ValidationError):
    """422 ``content_policy_violation``: the prompt or media was refused by a safety filter."""


class ResultNotReadyError(FalAPIError):
    """The result was asked for before the job completed (fal answers 202 with the status)."""

    status_code = 202


class RateLimitError(FalAPIError):
    """429: too many requests or concurrent requests; ``retry_after`` seconds when fal said."""

    status_code = 429


class RequestCancelledError(FalAPIError):
    """499: the request was cancelled (``client_cancelled``) or its client went away."""

    status_code = 499


class ServerError(FalAPIError):
    """5xx from fal or from the model's runner."""

    status_code = 500


class IngressError(ServerError):
    """502/503/504 from fal's edge proxy (an nginx page, no request id): the request never reached fal."""


class StartTimeoutError(ServerError):
    """504 with ``X-Fal-Request-Timeout-Type: user``: the job did not start before its start timeout."""

    status_code = 504


_BY_STATUS: dict[int, type[FalAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    499: RequestCancelledError,
}

# fal request-level error types (D-REQERR) that tell a more specific story than the status.
_BY_ERROR_TYPE: dict[str, type[FalAPIError]] = {
    "content_policy_violation": ContentPolicyError,
    "client_cancelled": RequestCancelledError,
    "client_disconnected": RequestCancelledError,
    "concurrent_requests_limit": RateLimitError,
    "startup_timeout": StartTimeoutError,
}


def is_cancellation(error_type: str | None) -> bool:
    """A request error type that means the request was cancelled (``client_cancelled``), not that it failed."""
    return error_type is not None and _BY_ERROR_TYPE.get(error_type) is RequestCancelledError


def _parse_field_errors(detail: Any) -> list[FieldError]:
    if isinstance(detail, str):
        return [FieldError(loc=("body",), msg=detail)]
    errors: list[FieldError] = []
    if isinstance(detail, list):
        for item in detail:
            if not isinstance(item, Mapping):
                continue
            loc = item.get("loc") or ("body",)
            errors.append(
                FieldError(
                    loc=tuple(loc) if isinstance(loc, (list, tuple)) else (str(loc),),
                    msg=str(item.get("msg", "invalid value")),
                    type=str(item.get("type", "value_error")),
                    ctx=item.get("ctx") if isinstance(item.get("ctx"), Mapping) else {},  # type: ignore[arg-type]
                    input=item.get("input"),
                )
            )
    return errors


def _message_from_body(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping):
        if isinstance(body.get("error"), Mapping):  # Platform API shape
            return str(body["error"].get("message") or fallback)
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            parts = _parse_field_errors(detail)
            if parts:
                return "; ".join(p.describe() for p in parts)
        if isinstance(body.get("error"), str):
            return str(body["error"])
        if isinstance(body.get("status"), str):
            return str(body["status"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (integer/float seconds; HTTP dates are converted)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import time
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds)


def is_ingress_error(status_code: int, headers: Mapping[str, str], text: str) -> bool:
    """fal's own rule (PY client): a 502/503/504 without ``x-fal-request-id`` whose body mentions nginx."""
    lowered = {k.lower() for k in headers}
    return status_code in (502, 503, 504) and "x-fal-request-id" not in lowered and "nginx" in text.lower()


def make_api_error(status_code: int, headers: Mapping[str, str], body: Any, text: str = "") -> FalAPIError:
    """Build the right exception for an error response (the only place statuses map to classes)."""
    lower = {k.lower(): v for k, v in headers.items()}
    error_type = lower.get("x-fal-error-type")
    if isinstance(body, Mapping):
        if isinstance(body.get("error_type"), str):
            error_type = body["error_type"]
        elif isinstance(body.get("error"), Mapping) and isinstance(body["error"].get("type"), str):
            error_type = error_type or body["error"]["type"]
    detail = body.get("detail") if isinstance(body, Mapping) else None
    field_errors = _parse_field_errors(detail) if status_code == 422 or isinstance(detail, list) else []
    if error_type is None and len(field_errors) == 1 and field_errors[0].type in _BY_ERROR_TYPE:
        error_type = field_errors[0].type
    request_id = lower.get("x-fal-request-id")
    message = _message_from_body(body, text.strip()[:300] or f"HTTP {status_code}")
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "error_type": error_type,
        "request_id": request_id,
        "body": body,
        "retry_after": parse_retry_after(lower.get("retry-after")),
    }

    cls: type[FalAPIError]
    if error_type in _BY_ERROR_TYPE:
        cls = _BY_ERROR_TYPE[error_type]
    elif any(e.type == "content_policy_violation" for e in field_errors):
        cls = ContentPolicyError
    elif status_code == 504 and lower.get("x-fal-request-timeout-type") == "user":
        cls = StartTimeoutError
    elif is_ingress_error(status_code, lower, text):
        cls = IngressError
        message = f"fal's edge proxy answered HTTP {status_code}; the request did not reach fal"
    elif status_code in _BY_STATUS:
        cls = _BY_STATUS[status_code]
    elif status_code >= 500:
        cls = ServerError
    else:
        cls = FalAPIError
    if issubclass(cls, ValidationError):
        return cls(message, errors=field_errors, **kwargs)
    return cls(message, **kwargs)


# Documented HTTP statuses of fal's request-level error types (D-REQERR).
REQUEST_ERROR_STATUS: dict[str, int] = {
    "request_timeout": 504,
    "startup_timeout": 504,
    "runner_scheduling_failure": 503,
    "runner_connection_timeout": 503,
    "runner_disconnected": 503,
    "runner_connection_refused": 503,
    "runner_connection_error": 503,
    "runner_incomplete_response": 502,
    "runner_server_error": 500,
    "client_disconnected": 499,
    "client_cancelled": 499,
    "bad_request": 400,
    "internal_error": 500,
}


def error_from_status_payload(status: Mapping[str, Any]) -> FalAPIError:
    """A job that finished as ``COMPLETED`` with ``error``/``error_type`` in its status (no HTTP error)."""
    error_type = status.get("error_type")
    message = str(status.get("error") or "the request failed")
    status_code = REQUEST_ERROR_STATUS.get(str(error_type), 500)
    cls: type[FalAPIError] = _BY_ERROR_TYPE.get(str(error_type)) or _BY_STATUS.get(status_code) or ServerError
    return cls(
        message,
        status_code=status_code,
        error_type=str(error_type) if error_type else None,
        request_id=status.get("request_id"),
        body=dict(status),
    )
