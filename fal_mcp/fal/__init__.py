"""The fal platform client. Knows nothing of MCP.

``FalClient`` is the entry point; the exceptions, typed results and policies below are what callers
catch, read and configure. Names are imported on first use, so ``import fal_mcp.fal.errors`` (done at
server start-up) does not pay for the whole HTTP/WebSocket stack; typed code imports from the submodules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["FalCredentials", "credentials_from_key", "resolve_credentials"], "auth"),
    "FalClient": "client",
    "EndpointId": "endpoint",
    **dict.fromkeys(
        [
            "AuthenticationError",
            "BadRequestError",
            "ContentPolicyError",
            "FalAPIError",
            "FalConnectionError",
            "FalError",
            "FalTimeoutError",
            "FieldError",
            "IngressError",
            "InvalidArgumentError",
            "InvalidEndpointIdError",
            "NotConfiguredError",
            "NotFoundError",
            "RateLimitError",
            "RequestCancelledError",
            "ResultNotReadyError",
            "ServerError",
            "StartTimeoutError",
            "SubmitOutcomeUnknownError",
            "ValidationError",
        ],
        "errors",
    ),
    "FalHosts": "hosts",
    **dict.fromkeys(
        ["CancelOutcome", "Completed", "InProgress", "JobHandle", "LogEntry", "Queued", "QueueStatus", "RunResult"],
        "models",
    ),
    "WaitEvent": "models",
    "QueueAPI": "queue",
    **dict.fromkeys(["RealtimeAPI", "RealtimeConnection"], "realtime"),
    **dict.fromkeys(["ReconcilePolicy", "RetryMode", "RetryPolicy"], "retry"),
    "RunAPI": "run",
    **dict.fromkeys(["ObjectLifecycle", "StorageAPI", "UploadedFile"], "storage"),
    **dict.fromkeys(["CatalogAPI", "CostEstimate", "ModelPage", "ModelSchema", "ModelSummary"], "catalog"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
