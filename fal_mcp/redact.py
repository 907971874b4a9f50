"""The one place secrets are scrubbed from text: logs, errors and tool output all pass through here.

Credentials register themselves when they are loaded; everything that leaves the process as
text (log lines, exception messages, tool results) goes through :func:`redact`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "[REDACTED]"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# Authorization header values, whatever secret they carry.
_AUTH_HEADER = re.compile(r"(?i)\b(Key|Bearer)\s+[A-Za-z0-9._~+/=:-]{8,}")
# fal_jwt_token=... and token=... in URLs.
_URL_TOKEN = re.compile(r"(?i)\b(fal_jwt_token|token)=([^&\s\"']+)")


def register_secret(value: str | None) -> None:
    """Remember a secret (and its parts, e.g. a key's id and secret halves) so it is never printed."""
    if not value or len(value) < 6:
        return
    parts = {value, *(p for p in value.split(":") if len(p) >= 6)}
    global _pattern
    with _lock:
        if parts <= _secrets:
            return
        _secrets.update(parts)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop every registered secret (tests only)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and credential-looking token masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _URL_TOKEN.sub(lambda m: f"{m.group(1)}={MASK}", text)


def redact_value(value: Any) -> Any:
    """Redact strings inside nested JSON-like values (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value
