"""Logging: structlog to stderr only (JSON by default). Stdout belongs to the MCP protocol in stdio mode."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from fal_mcp.redact import redact, redact_value

LEVEL_ENV = "FAL_MCP_LOG_LEVEL"
FORMAT_ENV = "FAL_MCP_LOG_FORMAT"  # "json" (default) or "console"


def _redact_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: redact_value(value) for key, value in event_dict.items()}


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Final safety net: whatever the processors rendered, mask secrets in the line itself."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Route structlog and stdlib logging (mcp, httpx2, uvicorn) to stderr, one line per record.

    Call before constructing the MCP server: the SDK's own ``basicConfig`` is a no-op once the
    root logger has a handler.
    """
    level_name = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    if level_name not in logging.getLevelNamesMapping():
        level_name = "INFO"
    use_json = (fmt or os.environ.get(FORMAT_ENV) or "json").lower() != "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, _redact_event, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],  # type: ignore[list-item]
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    # Per-request chatter from the HTTP stack is noise at INFO.
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
