"""The retry policy, in one place: what may be sent again, and how long to wait first.

Follows what fal's official clients retry (fal-protocol.md §9.4), plus ``Retry-After`` when fal sends it.
A submit is only re-sent when it provably never reached fal: a connection that was never made, or an
explicit refusal (408, 429, 503). A submit whose answer was lost after it was sent, or that fal's edge
answered 502/504, is *not* retried here — the queue client looks it up in fal's request history and
otherwise reports its outcome as unknown; it is never sent a second time.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass

import httpx2

from fal_mcp.fal.errors import is_ingress_error, parse_retry_after


class RetryMode(enum.Enum):
    IDEMPOTENT = "idempotent"  # reads, cancel, uploads of a whole body: safe to send again
    SUBMIT = "submit"  # creates a paid job: only when it cannot have reached fal
    NONE = "none"  # never (e.g. direct runs: fal never retries them either)


# Raised before a single byte of the request left this machine.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)

_ALWAYS_RETRY_STATUS = frozenset({408, 429})
_IDEMPOTENT_RETRY_STATUS = frozenset({408, 409, 429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_connect_attempts``: a refused connection (nobody listening, no route, no DNS answer) is an answer
    in itself, so it is retried only briefly; after that the host counts as unreachable for
    ``unreachable_seconds``, and requests to it in that time fail at their first refused connection
    instead of each waiting out the whole back-off. (Nothing was sent either way: the money rules are unchanged.)
    """

    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 10.0
    max_retry_after: float = 60.0
    jitter: float = 0.25
    max_connect_attempts: int = 3
    unreachable_seconds: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)  # honour fal's hint, but never wait unboundedly
        backoff = min(self.base_delay * (2 ** (attempt - 1)), self.max_delay)
        return backoff * random.uniform(1 - self.jitter, 1 + self.jitter)

    def should_retry_response(self, mode: RetryMode, status_code: int, headers: Mapping[str, str], text: str) -> bool:
        if mode is RetryMode.NONE:
            return False
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("x-fal-request-timeout-type"):
            return False  # the caller's own start timeout expired; sending again cannot help
        needs_retry = (lower.get("x-fal-needs-retry") or lower.get("x-fal-retryable") or "").strip().lower()
        if needs_retry in ("0", "false", "no"):
            return False
        if mode is RetryMode.SUBMIT:
            # Only refusals that prove nothing was queued: 408/429, and fal's edge saying it has no
            # upstream (503). An edge 502/504 may come after the request was forwarded: not repeated.
            return status_code in _ALWAYS_RETRY_STATUS or status_code == 503
        if status_code in _ALWAYS_RETRY_STATUS or is_ingress_error(status_code, lower, text):
            return True
        return status_code in _IDEMPOTENT_RETRY_STATUS or needs_retry in ("1", "true", "yes")

    def should_retry_exception(self, mode: RetryMode, exc: Exception) -> bool:
        if mode is RetryMode.NONE:
            return False
        if isinstance(exc, NOT_SENT_ERRORS):
            return True
        return mode is RetryMode.IDEMPOTENT and isinstance(exc, httpx2.TransportError)

    @staticmethod
    def retry_after(headers: Mapping[str, str]) -> float | None:
        lower = {k.lower(): v for k, v in headers.items()}
        if "retry-after-ms" in lower:
            try:
                return max(0.0, float(lower["retry-after-ms"]) / 1000)
            except ValueError:
                pass
        return parse_retry_after(lower.get("retry-after"))


@dataclass(frozen=True)
class ReconcilePolicy:
    """What to do when a submit's answer is lost after it was sent (fal-protocol.md has no idempotency key).

    ``enabled``: look the submit up in fal's request history (``GET {platform}/models/requests/by-endpoint``)
    ``lookups`` times, ``delay`` seconds apart and doubling, in a window starting ``window`` seconds before
    the send. Found → that request is ours. Not found → :class:`~fal_mcp.fal.errors.SubmitOutcomeUnknownError`:
    fal lists a request only after it has finished, so absence proves nothing and the submit is never
    re-sent; the caller keeps looking (the MCP server does, in the background).
    ``enabled=False`` raises :class:`~fal_mcp.fal.errors.SubmitOutcomeUnknownError` at once instead.
    """

    enabled: bool = True
    lookups: int = 3
    delay: float = 0.5
    window: float = 60.0
    page_limit: int = 100
