"""Endpoint ids, request ids, credential resolution, and that the key never leaks into text."""

from __future__ import annotations

import io
import logging

import pytest

from fal_mcp.fal.auth import (
    FalCredentials,
    credentials_from_key,
    looks_like_template,
    optional_credentials,
    resolve_credentials,
)
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.endpoint import EndpointId, check_request_id
from fal_mcp.fal.errors import FalAPIError, FalError, InvalidEndpointIdError, NotConfiguredError
from fal_mcp.log import get_logger

KEY = "4f2c1d0e-aaaa-bbbb-cccc-1234567890ab:9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
KEY_ID, KEY_SECRET = KEY.split(":")


@pytest.mark.parametrize(
    ("raw", "owner", "alias", "path", "namespace", "app"),
    [
        ("fal-ai/flux/dev", "fal-ai", "flux", "dev", None, "fal-ai/flux"),
        ("fal-ai/flux", "fal-ai", "flux", "", None, "fal-ai/flux"),
        ("fal-ai/flux/dev/image-to-image", "fal-ai", "flux", "dev/image-to-image", None, "fal-ai/flux"),
        ("/fal-ai/any-llm/", "fal-ai", "any-llm", "", None, "fal-ai/any-llm"),
        ("12345-my-app", "12345", "my-app", "", None, "12345/my-app"),  # legacy <numeric owner>-<alias>
        ("workflows/alice/pipeline", "alice", "pipeline", "", "workflows", "workflows/alice/pipeline"),
        ("comfy/bob/graph/run", "bob", "graph", "run", "comfy", "comfy/bob/graph"),
        ("fal-ai/kling-video/v2.1/pro/image-to-video", "fal-ai", "kling-video", "v2.1/pro/image-to-video", None, None),
    ],
)
def test_endpoint_ids_parse_like_fals_clients(
    raw: str, owner: str, alias: str, path: str, namespace: str | None, app: str | None
) -> None:
    endpoint = EndpointId.parse(raw)
    assert (endpoint.owner, endpoint.alias, endpoint.path, endpoint.namespace) == (owner, alias, path, namespace)
    assert endpoint.app == (app or f"{owner}/{alias}")
    assert EndpointId.parse(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "flux",  # one segment that is not a legacy id
        "my-app-12345",
        "https://fal.run/fal-ai/flux/dev",
        "fal-ai/flux?x=1",
        "fal-ai/../secrets",
        "fal-ai//flux",
        "fal ai/flux",
        "fal-ai\\flux",
        "workflows/alice",  # a namespace needs owner and name
        "comfy",
        "fal-ai/flux#frag",
    ],
)
def test_invalid_endpoint_ids_are_refused_with_a_hint(raw: str) -> None:
    with pytest.raises(InvalidEndpointIdError, match=r"fal-ai/flux/dev|owner/name") as caught:
        EndpointId.parse(raw)
    assert isinstance(caught.value, ValueError)


def test_request_ids() -> None:
    assert check_request_id(" 80e732af-660e-45cd-bd63-580e4f2a94cc ") == "80e732af-660e-45cd-bd63-580e4f2a94cc"
    for bad in ("", "short", "../../etc/passwd", "80e732af/status", "a b c d e f g h", "x" * 200):
        with pytest.raises(InvalidEndpointIdError, match="request id"):
            check_request_id(bad)


# -- credentials ---------------------------------------------------------------------------------


def test_fal_key_and_its_precedence() -> None:
    creds = resolve_credentials({"FAL_KEY": KEY, "FAL_KEY_ID": "other", "FAL_KEY_SECRET": "other-secret"})
    assert creds.authorization() == f"Key {KEY}" and creds.source == "FAL_KEY" and creds.key_id == KEY_ID
    quoted = resolve_credentials({"FAL_KEY": f' "{KEY}" '})
    assert quoted == creds


def test_key_id_and_secret() -> None:
    creds = resolve_credentials({"FAL_KEY_ID": KEY_ID, "FAL_KEY_SECRET": KEY_SECRET})
    assert creds.authorization() == f"Key {KEY}" and creds.source == "FAL_KEY_ID/FAL_KEY_SECRET"
    assert resolve_credentials({"FAL_KEY": "", "FAL_KEY_ID": KEY_ID, "FAL_KEY_SECRET": KEY_SECRET}) == creds
    with pytest.raises(NotConfiguredError, match="FAL_KEY_SECRET is not set"):
        resolve_credentials({"FAL_KEY_ID": KEY_ID})
    with pytest.raises(NotConfiguredError, match="FAL_KEY_ID is not set"):
        resolve_credentials({"FAL_KEY_SECRET": KEY_SECRET})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no FAL_KEY"),
        ({"FAL_KEY": ""}, "set but empty"),
        ({"FAL_KEY": "   "}, "set but empty"),
        ({"FAL_KEY": "${FAL_KEY}"}, "unexpanded placeholder"),
        ({"FAL_KEY": "$FAL_KEY"}, "unexpanded placeholder"),
        ({"FAL_KEY": "{{fal_key}}"}, "unexpanded placeholder"),
        ({"FAL_KEY_ID": "${FAL_KEY_ID}", "FAL_KEY_SECRET": "${FAL_KEY_SECRET}"}, "unexpanded placeholders"),
    ],
)
def test_unusable_configuration_says_how_to_fix_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(NotConfiguredError, match=message) as caught:
        resolve_credentials(env)
    assert "fal.ai/dashboard/keys" in caught.value.message and "--local" in caught.value.message
    creds, reason = optional_credentials(env)
    assert creds is None and reason == caught.value.message


def test_template_detection_and_explicit_keys() -> None:
    assert looks_like_template("${FAL_KEY}") and looks_like_template(" {{ key }} ") and looks_like_template("$X")
    assert not looks_like_template(KEY) and not looks_like_template("abc$def")
    assert credentials_from_key(KEY, source="request header").source == "request header"
    with pytest.raises(NotConfiguredError, match="request header is empty"):
        credentials_from_key("  ", source="request header")


# -- the key never shows up in text ---------------------------------------------------------------


@pytest.mark.anyio
async def test_key_is_not_in_repr_str_or_exceptions() -> None:
    creds = FalCredentials(KEY)
    async with FalClient(credentials=creds) as client:
        for text in (repr(creds), str(creds), repr(client), repr(client.http.credentials), f"{creds}"):
            assert KEY_SECRET not in text and KEY_ID not in text
    error = FalAPIError(f"bad credentials {KEY} / {creds.authorization()}", status_code=401)
    for text in (str(error), repr(error), error.message):
        assert KEY_SECRET not in text and KEY_ID not in text
    assert KEY_SECRET not in str(FalError(f"secret half {KEY_SECRET}"))


def test_key_is_not_in_log_output(log_output: io.StringIO) -> None:
    creds = FalCredentials(KEY)
    log = get_logger("tests.secrecy")
    log.info("calling fal", headers={"Authorization": creds.authorization()}, key=KEY, parts=[KEY_ID, KEY_SECRET])
    log.warning(f"formatted into the event: {KEY}")
    try:
        raise RuntimeError(f"boom with {creds.authorization()}")
    except RuntimeError:
        log.exception("failure")
    logging.getLogger("httpx2").warning("stdlib record with Key %s", KEY)
    output = log_output.getvalue()
    assert output.count("\n") >= 4 and "calling fal" in output and "boom with" in output
    assert KEY_SECRET not in output and KEY_ID not in output
    assert "[REDACTED]" in output
