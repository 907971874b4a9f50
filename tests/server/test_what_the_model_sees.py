"""What the model sees: every tool's success and error results, rendered the way each host family does.

Hosts show the model different halves of a result:

* structured-first (Claude Code, Codex, opencode): on success ``JSON.stringify(structuredContent)`` plus
  the non-text blocks (resource links, images), the text blocks dropped; on an error the first text
  block only.
* text-only (claude.ai, Claude Desktop, ChatGPT): the text blocks.
* error-first-text (hosts that show an error's first text block and a success's text and links).

For each, the request id, the next step, the field errors and the file links must be visible.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image

from fal_mcp.config import Settings
from fal_mcp.server.errors import ERROR_META_KEY
from tests.server.conftest import make_server

pytestmark = pytest.mark.anyio


def structured_first(result: CallToolResult) -> str:
    if result.is_error:
        return next((b.text for b in result.content if isinstance(b, TextContent)), "")
    parts = [json.dumps(result.structured_content)] if result.structured_content is not None else []
    if result.structured_content is None:  # no structured half: such hosts fall back to the text
        parts += [b.text for b in result.content if isinstance(b, TextContent)]
    for block in result.content:
        if isinstance(block, ResourceLink):
            parts.append(f"[{block.name}]({block.uri})")
        elif isinstance(block, ImageContent):
            parts.append(f"[image {block.mime_type}]")
    return "\n".join(parts)


def text_only(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


def error_first_text(result: CallToolResult) -> str:
    if result.is_error:
        return next((b.text for b in result.content if isinstance(b, TextContent)), "")
    parts = [b.text for b in result.content if isinstance(b, TextContent)]
    parts += [f"[{b.name}]({b.uri})" for b in result.content if isinstance(b, ResourceLink)]
    return "\n".join(parts)


RENDERERS: dict[str, Callable[[CallToolResult], str]] = {
    "structured-first": structured_first,
    "text-only": text_only,
    "error-first-text": error_first_text,
}

UNKNOWN_REQUEST = "00000000-0000-4000-8000-000000000000"


@dataclass
class Case:
    tool: str
    args: dict[str, Any]
    error: bool
    must_see: Callable[[dict[str, Any]], list[str]]  # from the structured result (or the error's data)


def _file_urls(data: dict[str, Any]) -> list[str]:
    return [f["url"] for f in data.get("files", []) if not f["url"].startswith("data:")]


def _error(*extra: str) -> Callable[[dict[str, Any]], list[str]]:
    """An error must show its kind, the next step, its ids and each field to fix."""

    def must_see(error: dict[str, Any]) -> list[str]:
        seen = [f"[{error['kind']}]", "Next step:", error["next_step"], *extra]
        seen += [error[key] for key in ("request_id", "endpoint_id") if error.get(key)]
        for field in error.get("fields", []):
            seen.append(field["field"])
            if field.get("allowed") is not None:
                seen.append(
                    str(field["allowed"]) if not isinstance(field["allowed"], list) else str(field["allowed"][0])
                )
        return seen

    return must_see


SLOW = {"seconds": 400, "steps": 4}  # ~8 s at the suite's time scale: still running after a 0.3 s wait
FLUX = "fal-ai/flux/dev"
CASES: dict[str, Case] = {
    "model_search": Case(
        "model_search", {"query": "flux", "limit": 2}, False, lambda d: [m["endpoint_id"] for m in d["models"]]
    ),
    "model_search-bad-limit": Case("model_search", {"limit": 999}, True, _error("limit")),
    "model_schema": Case(
        "model_schema", {"endpoint_id": FLUX}, False, lambda d: [FLUX, "num_inference_steps", "square_hd"]
    ),
    "model_schema-unknown": Case("model_schema", {"endpoint_id": "fal-ai/no-such-model"}, True, _error("model_search")),
    "fal_subscribe": Case(
        "fal_subscribe",
        {"endpoint_id": FLUX, "input": {"prompt": "a red fox", "seed": 5}},
        False,
        lambda d: [d["request_id"], *_file_urls(d), "queue_result", "download_dir", str(d["cost_estimate_usd"])],
    ),
    "fal_subscribe-pending": Case(
        "fal_subscribe",
        {"endpoint_id": "emulator/slow", "input": SLOW, "wait_seconds": 0.3},
        False,
        lambda d: [d["request_id"], d["next_step"], "queue_result"],
    ),
    "fal_subscribe-bad-input": Case(
        "fal_subscribe", {"endpoint_id": FLUX, "input": {"prompt": "x", "image_size": "giant"}}, True, _error()
    ),
    "fal_subscribe-policy": Case(
        "fal_subscribe", {"endpoint_id": FLUX, "input": {"prompt": "something forbidden"}}, True, _error()
    ),
    "queue_submit": Case(
        "queue_submit",
        {"endpoint_id": "emulator/slow", "input": SLOW},
        False,
        lambda d: [d["request_id"], "queue_result"],
    ),
    "queue_submit-bad-webhook": Case(
        "queue_submit",
        {"endpoint_id": FLUX, "input": {"prompt": "x"}, "webhook_url": "ftp://x"},
        True,
        _error("webhook_url"),
    ),
    "queue_status": Case(
        "queue_status", {"request_id": "{request_id}", "logs": True}, False, lambda d: [d["request_id"], d["status"]]
    ),
    "queue_status-unknown": Case(
        "queue_status", {"request_id": UNKNOWN_REQUEST}, True, _error(UNKNOWN_REQUEST, "endpoint_id")
    ),
    "queue_result": Case(
        "queue_result", {"request_id": "{flux_request_id}"}, False, lambda d: [d["request_id"], *_file_urls(d), FLUX]
    ),
    "queue_result-unknown": Case(
        "queue_result", {"request_id": UNKNOWN_REQUEST, "endpoint_id": FLUX}, True, _error(UNKNOWN_REQUEST)
    ),
    "queue_cancel": Case(
        "queue_cancel", {"request_id": "{request_id}"}, False, lambda d: [d["request_id"], d["outcome"]]
    ),
    "queue_cancel-bad-id": Case("queue_cancel", {"request_id": 42}, True, _error("request_id")),
    "jobs_list": Case(
        "jobs_list", {"limit": 50}, False, lambda d: [j["request_id"] for j in d["jobs"] if j["request_id"]][:3]
    ),
    "jobs_list-bad-limit": Case("jobs_list", {"limit": 0}, True, _error("limit")),
    "fal_run": Case(
        "fal_run",
        {"endpoint_id": FLUX, "input": {"prompt": "a quick fox", "seed": 9}},
        False,
        lambda d: [d["request_id"], *_file_urls(d)],
    ),
    "fal_run-policy": Case("fal_run", {"endpoint_id": FLUX, "input": {"prompt": "forbidden fox"}}, True, _error()),
    "fal_stream": Case(
        "fal_stream",
        {
            "endpoint_id": "openrouter/router",
            "input": {"prompt": "tell me a story", "model": "google/gemini-2.5-flash"},
        },
        False,
        lambda d: [d["output"]["output"][-40:]],  # the LLM's answer itself (its end: no JSON escapes)
    ),
    "fal_stream-none": Case(
        "fal_stream", {"endpoint_id": FLUX, "input": {"prompt": "x"}}, True, _error("fal_subscribe")
    ),
    "fal_realtime": Case(
        "fal_realtime",
        {
            "endpoint_id": "fal-ai/fast-lcm-diffusion",
            "inputs": [{"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2}],
        },
        False,
        lambda d: [*_file_urls(d), "fal-ai/fast-lcm-diffusion"],
    ),
    "fal_realtime-none": Case("fal_realtime", {"endpoint_id": FLUX, "inputs": [{"prompt": "x"}]}, True, _error()),
    "upload_file": Case("upload_file", {"path": "pixel.png"}, False, lambda d: [d["url"]]),
    "upload_file-refused": Case("upload_file", {"path": "/etc/passwd"}, True, _error("/etc/passwd")),
}


def test_every_tool_has_a_success_and_an_error_case() -> None:
    tools = {case.tool for case in CASES.values()}
    assert tools == {c.tool for c in CASES.values() if c.error} == {c.tool for c in CASES.values() if not c.error}
    assert len(tools) == 12


async def test_each_host_family_shows_what_the_model_needs(settings: Settings, workdir: Path, mode: str) -> None:
    """Every case, called in order through the in-memory client, rendered by every host family."""
    Image.new("RGB", (4, 4), (200, 10, 10)).save(workdir / "pixel.png")
    ids: dict[str, str] = {}
    problems: list[str] = []
    async with Client(make_server(settings), mode=mode) as client:
        for name, case in CASES.items():
            args = {k: v.format(**ids) if isinstance(v, str) and "{" in v else v for k, v in case.args.items()}
            result = await client.call_tool(case.tool, args)
            assert result.is_error is case.error, (name, result.content)
            if case.error:
                assert result.structured_content is None, name  # outputSchema validation in TypeScript clients
                data = result.meta[ERROR_META_KEY]
            else:
                data = result.structured_content
                ids.update(
                    {
                        "queue_submit": {"request_id": data.get("request_id")},
                        "fal_subscribe": {"flux_request_id": data.get("request_id")},
                    }.get(name, {})
                )
            for renderer, render in RENDERERS.items():
                seen = render(result)
                missing = [needle for needle in case.must_see(data) if needle not in seen]
                if missing or "Traceback" in seen or "pydantic" in seen:
                    problems.append(f"{renderer} host does not show {missing} of {name}:\n{seen[:1500]}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("tool", ["fal_subscribe", "fal_stream"])
async def test_very_large_outputs_are_capped_with_a_pointer_to_all_of_it(settings: Settings, tool: str) -> None:
    """A 60,000-character answer: both halves stay bounded and point to a file holding the whole output."""
    from fal_mcp.server.results import OUTPUT_STRING_LIMIT, TEXT_OUTPUT_LIMIT

    prompt = "w" * 60_000  # one long word: the emulator streams word by word
    args = {"endpoint_id": "openrouter/router", "input": {"prompt": prompt, "model": "google/gemini-2.5-flash"}}
    async with Client(make_server(settings)) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    data = result.structured_content
    answer = data["output"]["output"]
    assert len(answer) < OUTPUT_STRING_LIMIT + 100 and "more characters: see full_output" in answer
    full = anyio.Path(data["full_output"])
    assert prompt in json.loads(await full.read_text(encoding="utf-8"))["output"]  # the whole output
    text = text_only(result)
    assert len(text) < TEXT_OUTPUT_LIMIT + 1_000 and str(full) in text
    assert len(json.dumps(data)) < OUTPUT_STRING_LIMIT + 5_000


def test_huge_json_is_cut_by_length_and_by_items() -> None:
    """An STT-like output with thousands of chunks, or one giant string: both bounded, and the cut is counted."""
    from fal_mcp.server.results import OUTPUT_LIST_LIMIT, cap_strings

    chunks = [{"timestamp": [i, i + 1], "text": f"word {i}"} for i in range(3 * OUTPUT_LIST_LIMIT)]
    capped, cut = cap_strings({"text": "x" * 10, "chunks": chunks}, limit=100)
    assert cut == 2 * OUTPUT_LIST_LIMIT and len(capped["chunks"]) == OUTPUT_LIST_LIMIT + 1
    assert capped["chunks"][:3] == chunks[:3] and "more items: see full_output" in capped["chunks"][-1]
    small = {"text": "short", "chunks": chunks[:3]}
    assert cap_strings(small) == (small, 0)


async def test_many_long_strings_are_cut_until_the_whole_output_fits(settings: Settings) -> None:
    """Ten 40,000-character strings pass the per-string cut but not the whole-output bound."""
    from types import SimpleNamespace

    from fal_mcp.server.results import OUTPUT_JSON_LIMIT, cap_output

    output = {f"part{i}": "y" * 40_000 for i in range(10)}
    call = SimpleNamespace(state=SimpleNamespace(settings=settings, per_user=False))  # all cap_output reads
    capped, path = cap_output(call, output, "many-strings")  # type: ignore[arg-type]
    assert len(json.dumps(capped)) <= OUTPUT_JSON_LIMIT and path is not None
    assert json.loads(await anyio.Path(path).read_text(encoding="utf-8")) == output
