"""Verifying fal's webhook signatures (Ed25519 over request id, user id, timestamp and the body's SHA-256).

fal publishes no client helper for this; the recipe is its webhook docs': the message is the UTF-8 of
``request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(raw_body))``, the signature is hex
in ``X-Fal-Webhook-Signature``, and any key of fal's JWKS (``kty: OKP``, ``crv: Ed25519``) may have signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# fal's documented replay window: reject a timestamp more than 5 minutes from now.
TIMESTAMP_TOLERANCE_SECONDS = 300

REQUEST_ID_HEADER = "x-fal-webhook-request-id"
USER_ID_HEADER = "x-fal-webhook-user-id"
TIMESTAMP_HEADER = "x-fal-webhook-timestamp"
SIGNATURE_HEADER = "x-fal-webhook-signature"


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The exact bytes fal signs; shared with the emulator's sender so both sides agree by construction."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _public_keys(jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Ed25519PublicKey]:
    """Every usable Ed25519 key of a JWKS document (``{"keys": [...]}``) or a bare list of JWKs."""
    entries = jwks.get("keys", []) if isinstance(jwks, Mapping) else jwks
    keys: list[Ed25519PublicKey] = []
    for jwk in entries:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(_b64url_decode(str(jwk.get("x", "")))))
        except (ValueError, binascii.Error):
            continue
    return keys


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    now: float | None = None,
    tolerance_seconds: float = TIMESTAMP_TOLERANCE_SECONDS,
) -> bool:
    """True when ``body`` was signed by one of ``jwks``' keys within the timestamp window.

    ``headers`` may use any casing. Never raises on bad input: anything malformed is simply not valid.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    request_id = lowered.get(REQUEST_ID_HEADER)
    user_id = lowered.get(USER_ID_HEADER)
    timestamp = lowered.get(TIMESTAMP_HEADER)
    signature_hex = lowered.get(SIGNATURE_HEADER)
    if not (request_id and user_id and timestamp and signature_hex):
        return False
    try:
        sent_at = int(timestamp)
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    message = signed_message(request_id, user_id, timestamp, body)
    for key in _public_keys(jwks):
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
