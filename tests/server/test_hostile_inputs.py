"""Hostile values and hosts (issue 9 #9, #10, #13): an image bomb, a client that never answers
roots/list, values JSON cannot carry. Each gets a bounded, clear outcome and nothing is paid for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.types import ListRootsResult

from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.server import state as state_module
from tests.server.conftest import TEST_KEY
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio

# --------------------------------------------------------------------------- image bomb (#9)

# Runs in its own process so its peak memory is its own. The bomb is a real PNG (12000x12000 RGB, ~420 KiB
# compressed) built row by row, so making it costs little memory.
BOMB_SCRIPT = textwrap.dedent(
    """
    import io, resource, struct, sys, zlib
    from PIL import Image
    from fal_mcp.server.results import _make_thumbnail

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    side = 12000
    packer = zlib.compressobj(9)
    row = b"\\x00" + b"\\x00" * (3 * side)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    bomb = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    bomb += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    normal = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(normal, format="PNG")
    _make_thumbnail(normal.getvalue(), 64, 100_000)  # warm up Pillow's codecs before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bombed = _make_thumbnail(bomb, 512, 100_000)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    thumb = _make_thumbnail(normal.getvalue(), 512, 100_000)
    print(len(bomb), bombed is None, round(grown_mib, 1), Image.open(io.BytesIO(thumb)).size if thumb else None)
    """
)


def test_image_bomb_is_measured_before_it_is_decoded() -> None:
    out = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    size, no_thumbnail, grown_mib, normal = out.stdout.strip().splitlines()[-1].split(maxsplit=3)
    assert int(size) < 1024 * 1024  # small on the wire
    assert no_thumbnail == "True"
    assert float(grown_mib) < 32, f"peak memory grew {grown_mib} MiB decoding a bomb"  # decoding it is 412 MiB
    assert normal.strip() == "(512, 384)"  # ordinary images still get their preview


# --------------------------------------------------------------------------- roots/list never answered (#10)


async def test_a_client_that_never_answers_roots_list_does_not_hang_calls(
    server: Any, workdir: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared roots, never answers: calls without local files proceed after the bounded wait; local files
    get a clear refusal (the client's scope is unknown, so the working directory is not assumed)."""
    monkeypatch.setattr(state_module, "ROOTS_TIMEOUT_SECONDS", 0.5, raising=False)
    (workdir / "cat.txt").write_text("meow")
    asked = 0
    never = anyio.Event()

    async def silent(_context: Any) -> ListRootsResult:
        nonlocal asked
        asked += 1
        await never.wait()
        raise AssertionError("unreachable")

    data = {"seconds": 1, "steps": 1, "fail": False, "tag": "roots-silent"}
    with anyio.fail_after(20):
        async with Client(server, mode="legacy", list_roots_callback=silent) as client:
            done = await call(client, "fal_subscribe", {"endpoint_id": "emulator/slow", "input": data})
            refused = await call(client, "upload_file", {"path": "cat.txt"})
            never.set()
    assert not done.is_error and structured(done)["status"] == "COMPLETED", text_of(done)
    assert error_of(refused)["kind"] == "refused" and "no directory is allowed" in text_of(refused)
    assert asked == 1  # the session is not asked (and waited for) again on every call


# --------------------------------------------------------------------------- values JSON cannot carry (#13)


def _tool(message_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": message_id, "method": "tools/call", "params": params}


async def test_nan_infinity_huge_ints_and_huge_ids_are_clear_errors_and_nothing_is_sent(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Raw JSON-RPC over stdio, as a host could send it: ``NaN``/``Infinity`` tokens (which JSON parsers in
    Python accept) and integers beyond 64 bits reach the tools; each is an invalid_argument naming the field."""
    flux, slow = "fal-ai/flux/dev", "emulator/slow"
    calls = {
        10: _tool(10, "fal_subscribe", {"endpoint_id": flux, "input": {"prompt": "n", "guidance_scale": float("nan")}}),
        11: _tool(11, "queue_submit", {"endpoint_id": flux, "input": {"prompt": "inf", "extra": [float("inf")]}}),
        12: _tool(12, "fal_run", {"endpoint_id": flux, "input": {"prompt": "-inf", "guidance_scale": float("-inf")}}),
        13: _tool(13, "fal_realtime", {"endpoint_id": flux, "inputs": [{"prompt": "big", "seed": 2**70}]}),
        14: _tool(14, "fal_subscribe", {"endpoint_id": slow, "input": {"seconds": 1, "nested": {"n": -(2**64)}}}),
        15: _tool(15, "fal_subscribe", {"endpoint_id": "fal-ai/" + "a" * 70_000, "input": {"prompt": "x"}}),
        16: _tool(16, "model_schema", {"endpoint_id": "fal-ai/" + "b" * 70_000}),
    }
    expected_field = {10: "guidance_scale", 11: "extra[0]", 12: "guidance_scale", 13: "seed", 14: "nested.n"}
    before = sum(emulator.state.submissions.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env.update(
        FAL_KEY=TEST_KEY,
        FAL_MCP_BASE_URL=emulator.base_url,
        FAL_MCP_LEDGER=str(tmp_path / "ledger.sqlite3"),
        FAL_MCP_CACHE_DIR=str(tmp_path / "cache"),
    )
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    replies: dict[int, dict[str, Any]] = {}
    process = await anyio.open_process(
        [sys.executable, "-m", "fal_mcp"], env=env, cwd=tmp_path, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    async with process:
        assert process.stdin is not None and process.stdout is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(60):
            for message in (hello, {"jsonrpc": "2.0", "method": "notifications/initialized"}, *calls.values()):
                await process.stdin.send(json.dumps(message).encode() + b"\n")  # NaN/Infinity as JSON tokens
            while set(replies) < {1, *calls}:
                reply = json.loads(await reader.receive_until(b"\n", 10 * 1024 * 1024))
                if "id" in reply:
                    replies[reply["id"]] = reply
            await process.stdin.aclose()
            await process.wait()
    for message_id in calls:
        result = replies[message_id]["result"]
        text = result["content"][0]["text"]
        assert result["isError"] is True, text
        assert "[invalid_argument]" in text and "internal" not in text, text
        if message_id in expected_field:
            assert expected_field[message_id] in text and "Nothing was submitted" in text, text
        else:
            assert "endpoint id of 70007 characters refused" in text, text
    assert sum(emulator.state.submissions.values()) == before
