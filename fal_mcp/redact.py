"""The one place secrets are scrubbed from text: logs, errors and tool output all pass through here.

Two kinds of secrets, kept apart so that callers cannot make redaction grow:

- the process's own credentials (the server's fal key, the HTTP token) are few and fixed: they are
  matched exactly, wherever they appear (:func:`register_secret`);
- per-caller secrets (each ``--per-user`` caller's fal key, short-lived realtime tokens) arrive from the
  network, so they live in a bounded, least-recently-used set and are matched as whole tokens by one
  fixed pattern (:func:`remember_caller_secret`): no regex is rebuilt per caller and memory stays flat.
  A caller chooses what it sends, so only parts that look like secrets are kept (long, or mixing letters
  and digits): a "key" made of ordinary words (``invalid_argument:submit_outcome_unknown``) must not
  blank those words out of everyone else's errors, logs and ledger.

On top of both, anything shaped like a fal key (``<uuid>:<32 hex>``) or an ``Authorization`` value is
masked whether or not it was registered.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

MASK = "[REDACTED]"
# Per-caller secret parts remembered at once (two per fal key): far more than active callers, bounded.
MAX_CALLER_SECRETS = 4096
# The alphabet of fal keys' halves and of JWT segments; a caller secret is matched as a whole run of it.
CALLER_SECRET_CHARS = "A-Za-z0-9_-"
# A caller's secret part is kept if it is this long and mixes letters and digits (fal key secrets are 32 hex
# digits, key ids UUIDs), or at least MIN_OPAQUE_CALLER_PART long whatever its characters (JWT segments).
MIN_CALLER_PART = 16
MIN_OPAQUE_CALLER_PART = 32

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_caller_parts: OrderedDict[str, None] = OrderedDict()

# Authorization header values, whatever secret they carry.
_AUTH_HEADER = re.compile(r"(?i)\b(Key|Bearer)\s+[A-Za-z0-9._~+/=:-]{8,}")
# fal_jwt_token=... and token=... in URLs.
_URL_TOKEN = re.compile(r"(?i)\b(fal_jwt_token|token)=([^&\s\"']+)")
# A real fal key: "<uuid>:<32 hex>" (registered or not).
_FAL_KEY_SHAPE = re.compile(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{32}\b")
_CALLER_RUN = re.compile(f"[{CALLER_SECRET_CHARS}]{{{MIN_CALLER_PART},}}")
_CALLER_PART_SPLIT = re.compile(f"[^{CALLER_SECRET_CHARS}]+")


def register_secret(value: str | None) -> None:
    """Remember one of the process's own secrets (and its parts, e.g. a key's id and secret halves).

    For configuration only (a handful per process): every call rebuilds the exact-match pattern.
    Secrets that arrive from callers go through :func:`remember_caller_secret` instead.
    """
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


def remember_caller_secret(value: str) -> None:
    """Remember a secret that came from a caller, in O(1) and bounded memory (least recently used goes first).

    The value is split into runs of ``[A-Za-z0-9_-]`` (a fal key's id and secret, a JWT's segments); the
    runs that look like secrets (see :func:`_secret_like`) are masked wherever they appear as a whole
    token. Call it on each use, so active callers stay remembered.
    """
    parts = [p for p in _CALLER_PART_SPLIT.split(value) if _secret_like(p)]
    with _lock:
        for part in parts:
            _caller_parts[part] = None
            _caller_parts.move_to_end(part)
        while len(_caller_parts) > MAX_CALLER_SECRETS:
            _caller_parts.popitem(last=False)


def _secret_like(part: str) -> bool:
    """Long, or long enough and mixing letters and digits: not a word or name another caller's text may hold."""
    if len(part) >= MIN_OPAQUE_CALLER_PART:
        return True
    return len(part) >= MIN_CALLER_PART and any(c.isdigit() for c in part) and any(c.isalpha() for c in part)


def caller_secret_count() -> int:
    """How many per-caller secret parts are remembered (bounded by :data:`MAX_CALLER_SECRETS`)."""
    return len(_caller_parts)


def forget_secrets() -> None:
    """Drop every registered secret (tests only)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _caller_parts.clear()
        _pattern = None


def _mask_caller_run(match: re.Match[str]) -> str:
    return MASK if match.group(0) in _caller_parts else match.group(0)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and credential-looking token masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if _caller_parts:
        text = _CALLER_RUN.sub(_mask_caller_run, text)
    text = _FAL_KEY_SHAPE.sub(MASK, text)
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
