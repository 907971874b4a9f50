"""Typed values at the client's edges: what fal answers (statuses, logs) and what our APIs hand back.

All are frozen pydantic models, tolerant of fields fal omits or adds. URLs on a :class:`JobHandle`
are built by us from the configured hosts; URLs fal puts in its answers are kept for display only
and never followed.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

QueueState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class LogEntry(_Frozen):
    """One log line of a running request (fal sends ``level``/``source``/``labels`` only sometimes)."""

    message: str = ""
    timestamp: str | None = None
    level: str | None = None
    source: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)

    @field_validator("message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    @property
    def key(self) -> tuple[str, str]:
        """Identity for de-duplication: fal's polled logs are a moving window, not a growing list."""
        return (self.timestamp or "", self.message)


class QueueStatus(_Frozen):
    """fal's ``QueueStatus`` (§3.2). A failed job is ``COMPLETED`` with ``error``/``error_type``."""

    status: QueueState
    request_id: str
    queue_position: int | None = None
    logs: list[LogEntry] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    response_url: str | None = None  # as fal sent it: for display, never followed

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    @field_validator("logs", mode="before")
    @classmethod
    def _logs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
        return None

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def failed(self) -> bool:
        return self.completed and (self.error is not None or self.error_type is not None)

    @property
    def cancelled(self) -> bool:
        """Finished because it was cancelled: fal reports that as ``COMPLETED`` with ``client_cancelled``."""
        from fal_mcp.fal.errors import is_cancellation

        return self.completed and is_cancellation(self.error_type)


class JobHandle(_Frozen):
    """A queued request: its id and the app-only URLs built from *our* configured queue host."""

    endpoint_id: str
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None
    input_digest: str | None = None
    # True when the submit's answer was lost and the request was found in fal's request history.
    reconciled: bool = False


class Queued(_Frozen):
    """Waiting for a runner; ``position`` requests are ahead (0: next)."""

    kind: Literal["queued"] = "queued"
    request_id: str
    position: int


class InProgress(_Frozen):
    """Running. ``logs`` holds only the lines not yielded before (empty on the transition itself)."""

    kind: Literal["in_progress"] = "in_progress"
    request_id: str
    logs: tuple[LogEntry, ...] = ()


class Completed(_Frozen):
    """Finished, successfully or not (``error``/``error_type`` set). ``logs``: lines not yielded before."""

    kind: Literal["completed"] = "completed"
    request_id: str
    logs: tuple[LogEntry, ...] = ()
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.error_type is not None


WaitEvent = Queued | InProgress | Completed


class CancelOutcome(enum.StrEnum):
    CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"  # removed from the queue, or the runner was told to stop
    ALREADY_COMPLETED = "ALREADY_COMPLETED"  # too late: the request had finished


class RunResult(_Frozen):
    """The answer of a direct run (``fal.run``): the output and what fal said about it in headers."""

    request_id: str | None
    data: dict[str, Any]
    billable_units: float | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # fal's ``x-fal-*`` response headers
