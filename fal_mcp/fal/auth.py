"""Credentials: ``FAL_KEY``, or ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``; never printed anywhere."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fal_mcp.fal.errors import NotConfiguredError
from fal_mcp.redact import CALLER_SECRET_CHARS, register_secret, remember_caller_secret

# fal keys are "<key id>:<key secret>" (a UUID and 32 hex digits); anything much shorter was probably
# truncated when pasted, and a caller's key in another shape is not a fal key at all.
MIN_KEY_ID, MIN_KEY_SECRET = 8, 16
MAX_KEY_LENGTH = 512
_PLAUSIBLE_KEY = re.compile(
    f"[{CALLER_SECRET_CHARS}]{{{MIN_KEY_ID},128}}:[{CALLER_SECRET_CHARS}]{{{MIN_KEY_SECRET},256}}"
)
_TEMPLATE = re.compile(r"^\s*(\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\{\{[^}]*\}\})\s*$")

HOW_TO_FIX = (
    "Set FAL_KEY to your fal.ai API key (https://fal.ai/dashboard/keys), or FAL_KEY_ID and FAL_KEY_SECRET; "
    "in an MCP client config put it under the server's \"env\". Without a key, 'fal-mcp --local' runs "
    "everything against the built-in offline emulator."
)


def header_safe(value: str) -> bool:
    """Visible ASCII and spaces only: no CR/LF/NUL or other control or non-ASCII character.

    Anything else cannot go into an HTTP header as-is: HTTP libraries refuse it only while sending
    (after our ledger and retry logic think it may have left) and echo it in their error message.
    """
    return value.isascii() and value.isprintable()


def plausible_fal_key(value: str) -> bool:
    """Whether a caller's key has fal's ``<key id>:<key secret>`` shape (checked before it is kept anywhere)."""
    return len(value) <= MAX_KEY_LENGTH and _PLAUSIBLE_KEY.fullmatch(value) is not None


def looks_like_template(value: str) -> bool:
    """``${FAL_KEY}``, ``$FAL_KEY`` or ``{{fal_key}}``: a host passed its config placeholder through unexpanded."""
    return bool(_TEMPLATE.match(value))


@dataclass(frozen=True, repr=False)
class FalCredentials:
    """A fal key. ``repr``/``str`` never show it; only :meth:`authorization` reveals it, for the header."""

    _key: str
    source: str = "FAL_KEY"
    per_caller: bool = False  # a per-user HTTP caller's key: remembered for redaction in a bounded set

    def __post_init__(self) -> None:
        if not header_safe(self._key):
            # Never built, so never sent, logged or echoed by an HTTP library's error.
            raise NotConfiguredError(
                f"the fal key from {self.source} contains a line break, control or non-ASCII character, so it "
                f"cannot be sent in an HTTP header. {HOW_TO_FIX}"
            )
        if self.per_caller:
            remember_caller_secret(self._key)
        else:
            register_secret(self._key)

    def authorization(self) -> str:
        return f"Key {self._key}"

    @property
    def key_id(self) -> str:
        """The public half of an ``id:secret`` key, for display; empty for opaque keys."""
        return self._key.split(":", 1)[0] if ":" in self._key else ""

    def __repr__(self) -> str:
        return f"FalCredentials(source={self.source!r}, key=[REDACTED])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FalCredentials) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip('"').strip("'").strip()
    return value or None


def credentials_from_key(key: str, source: str = "argument", *, per_caller: bool = False) -> FalCredentials:
    """Validate a key given explicitly; ``per_caller`` for an HTTP user's own key, which must look like a fal key."""
    cleaned = _clean(key)
    if cleaned is None:
        raise NotConfiguredError(f"the fal key from {source} is empty. {HOW_TO_FIX}")
    if looks_like_template(cleaned):
        raise NotConfiguredError(
            f"the fal key from {source} is an unexpanded placeholder (like ${{FAL_KEY}}): the MCP client did not "
            f"substitute it. {HOW_TO_FIX}"
        )
    if per_caller and not plausible_fal_key(cleaned):
        raise NotConfiguredError(f"the fal key from {source} is not shaped like a fal key ('<key id>:<key secret>')")
    return FalCredentials(cleaned, source=source, per_caller=per_caller)


def resolve_credentials(env: Mapping[str, str] | None = None) -> FalCredentials:
    """Find the key the way fal's clients do (``FAL_KEY`` first, then ``FAL_KEY_ID:FAL_KEY_SECRET``).

    Raises :class:`NotConfiguredError` with how to fix it when nothing usable is set.
    """
    env = os.environ if env is None else env
    raw_key = env.get("FAL_KEY")
    if raw_key is not None and _clean(raw_key) is not None:
        return credentials_from_key(raw_key, source="FAL_KEY")
    key_id, key_secret = _clean(env.get("FAL_KEY_ID")), _clean(env.get("FAL_KEY_SECRET"))
    if key_id and key_secret:
        if looks_like_template(key_id) or looks_like_template(key_secret):
            raise NotConfiguredError(
                "FAL_KEY_ID/FAL_KEY_SECRET are unexpanded placeholders (like ${FAL_KEY_ID}). " + HOW_TO_FIX
            )
        return FalCredentials(f"{key_id}:{key_secret}", source="FAL_KEY_ID/FAL_KEY_SECRET")
    if key_id or key_secret:
        missing = "FAL_KEY_SECRET" if key_id else "FAL_KEY_ID"
        raise NotConfiguredError(f"{missing} is not set (FAL_KEY_ID and FAL_KEY_SECRET go together). {HOW_TO_FIX}")
    if raw_key is not None:
        raise NotConfiguredError(f"FAL_KEY is set but empty. {HOW_TO_FIX}")
    raise NotConfiguredError(f"fal is not configured: no FAL_KEY. {HOW_TO_FIX}")


def optional_credentials(env: Mapping[str, str] | None = None) -> tuple[FalCredentials | None, str | None]:
    """Credentials, or ``None`` and the reason; for servers that start and serve key-less tools anyway."""
    try:
        return resolve_credentials(env), None
    except NotConfiguredError as exc:
        return None, exc.message
