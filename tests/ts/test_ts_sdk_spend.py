"""The spend gate through the TypeScript SDK client: the approval form a host shows its user, and the
confirm_token road for hosts without forms (FAL_MCP_CONFIRM_ABOVE_USD set below the call's estimate).

The client validates the form's ``requestedSchema`` (``elicitation/create``) with its own schema, as
Claude Code's does; the emulator's submission count shows what was paid for.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from tests.server.test_transports import SERVER_KEY
from tests.ts.conftest import first_text, stdio_session, unexplained_errors

SERVER = [sys.executable, "-m", "fal_mcp"]
FLUX = "fal-ai/flux/dev"  # about $0.025 a picture


def gate_env(emulator: EmulatorServer) -> dict[str, str]:
    return {"FAL_MCP_BASE_URL": emulator.base_url, "FAL_KEY": SERVER_KEY, "FAL_MCP_CONFIRM_ABOVE_USD": "0.001"}


def paid(emulator: EmulatorServer, data: dict) -> int:
    return emulator.state.submissions[f"{FLUX} {input_digest(data)}"]


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_a_host_with_forms_asks_its_user(tmp_path: Path, emulator: EmulatorServer, answer: str) -> None:
    data = {"prompt": f"a picture the user must approve ({answer})", "num_inference_steps": 4}
    with stdio_session(tmp_path, SERVER, connect={"elicitation": answer}, **gate_env(emulator)) as client:
        call = client.call("fal_subscribe", {"endpoint_id": FLUX, "input": data})
        diagnostics = client.request("diagnostics")
    (form,) = diagnostics["elicitations"]
    assert "$" in form["message"] and form["requestedSchema"]["properties"]["approve"]["type"] == "boolean"
    assert unexplained_errors(diagnostics) == []
    if answer == "accept":
        assert call.structured["status"] == "COMPLETED"
        assert paid(emulator, data) == 1
    else:
        declined = first_text(call)  # a readable error result, not a throw
        assert "declined" in declined and "Nothing was submitted or charged" in declined
        assert paid(emulator, data) == 0


def test_a_host_without_forms_gets_a_confirm_token(tmp_path: Path, emulator: EmulatorServer) -> None:
    data = {"prompt": "a picture approved by token", "num_inference_steps": 4}
    args = {"endpoint_id": FLUX, "input": data}
    with stdio_session(tmp_path, SERVER, **gate_env(emulator)) as client:
        asked = first_text(client.call("fal_subscribe", args))
        assert "approval_required" in asked and paid(emulator, data) == 0
        (token,) = set(re.findall(r"confirm_token='([^']+)'", asked))
        done = client.call("fal_subscribe", {**args, "confirm_token": token})
        assert done.structured["status"] == "COMPLETED"
        again = first_text(client.call("fal_subscribe", {**args, "confirm_token": token, "fresh": True}))
    assert paid(emulator, data) == 1  # the token paid once; used again it is refused
    assert "already used" in again
