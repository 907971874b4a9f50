"""The spend gate: above FAL_MCP_CONFIRM_ABOVE_USD the user is asked (an elicitation form in both protocol
eras, or a one-time confirm_token where the host has no form); budgets come from the ledger; an unknown
cost with any limit asks. Every path is judged by the emulator's submission count."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.spend import REQUIRES_USER_INTERACTION, ConfirmationTokens, Quote
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, structured, text_of

pytestmark = pytest.mark.anyio

IMAGE = "fal-ai/fast-lcm-diffusion"  # $0.001 per image in the emulator's catalog
PAYING = ("fal_subscribe", "queue_submit", "fal_run", "fal_stream", "fal_realtime")


def submissions(emulator: EmulatorServer, endpoint_id: str = IMAGE) -> int:
    return sum(n for key, n in emulator.state.submissions.items() if key.startswith(f"{endpoint_id} "))


def fresh_input() -> dict[str, Any]:
    return {"prompt": f"a lighthouse {uuid.uuid4().hex[:8]}", "num_images": 2}


class Answering:
    """An elicitation callback that gives one answer and remembers what it was asked."""

    def __init__(self, action: str, approve: bool = True) -> None:
        self.action, self.approve = action, approve
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, _context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.action == "accept":
            return ElicitResult(action="accept", content={"approve": self.approve})
        return ElicitResult(action=self.action)  # type: ignore[arg-type]


@pytest.mark.parametrize(("action", "approve"), [("decline", True), ("cancel", True), ("accept", False)])
async def test_a_user_who_says_no_pays_nothing(
    settings: Settings, emulator: EmulatorServer, mode: str, action: str, approve: bool
) -> None:
    answer = Answering(action, approve)
    server = make_server(settings, confirm_above_usd=0.0015)
    async with Client(server, mode=mode, elicitation_callback=answer) as client:
        before = submissions(emulator)
        result = await call(client, "fal_subscribe", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert error_of(result)["kind"] == "declined", text_of(result)
        assert "Nothing was submitted" in text_of(result)
    assert submissions(emulator) == before
    assert len(answer.asked) == 1
    message = answer.asked[0].message
    assert IMAGE in message and "$0.002" in message and "num_images=2" in message, message


async def test_a_user_who_approves_pays_once(settings: Settings, emulator: EmulatorServer, mode: str) -> None:
    answer = Answering("accept")
    server = make_server(settings, confirm_above_usd=0.0015, budget_usd_per_day=1.0)
    async with Client(server, mode=mode, elicitation_callback=answer) as client:
        before = submissions(emulator)
        result = await call(client, "fal_subscribe", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert not result.is_error, text_of(result)
        assert structured(result)["status"] == "COMPLETED"
    assert submissions(emulator) == before + 1
    assert len(answer.asked) == 1
    assert "1.00" in answer.asked[0].message  # the remaining budget is shown when asking


async def test_below_the_threshold_nobody_is_asked(settings: Settings, emulator: EmulatorServer) -> None:
    answer = Answering("decline")
    server = make_server(settings, confirm_above_usd=0.5)
    async with Client(server, elicitation_callback=answer) as client:
        before = submissions(emulator)
        result = await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert not result.is_error, text_of(result)
    assert submissions(emulator) == before + 1 and answer.asked == []


async def test_without_a_form_a_one_time_token_approves_exactly_that_call(
    settings: Settings, emulator: EmulatorServer, mode: str
) -> None:
    server = make_server(settings, confirm_above_usd=0.0015)
    data = fresh_input()
    async with Client(server, mode=mode) as client:  # no elicitation capability
        before = submissions(emulator)
        asked = await call(client, "queue_submit", {"endpoint_id": IMAGE, "input": data})
        error = error_of(asked)
        assert error["kind"] == "approval_required" and error["cost_estimate_usd"] == pytest.approx(0.002)
        token = error["confirm_token"]
        assert token in text_of(asked) and "$0.002" in text_of(asked)
        assert submissions(emulator) == before

        other_input = await call(
            client, "queue_submit", {"endpoint_id": IMAGE, "input": fresh_input(), "confirm_token": token}
        )
        assert error_of(other_input)["kind"] == "approval_required"
        assert "another input, price, caller" in text_of(other_input)
        assert submissions(emulator) == before

        forged = await call(client, "queue_submit", {"endpoint_id": IMAGE, "input": data, "confirm_token": "ok1.x.y.z"})
        assert error_of(forged)["kind"] == "approval_required"
        assert submissions(emulator) == before

        approved = await call(client, "queue_submit", {"endpoint_id": IMAGE, "input": data, "confirm_token": token})
        assert not approved.is_error, text_of(approved)
        assert submissions(emulator) == before + 1

        replay = await call(client, "queue_submit", {"endpoint_id": IMAGE, "input": data, "confirm_token": token})
        assert error_of(replay)["kind"] == "approval_required" and "already used" in text_of(replay)
        assert submissions(emulator) == before + 1


async def test_another_caller_cannot_use_a_token(settings: Settings, emulator: EmulatorServer) -> None:
    """Tokens are bound to the caller (the ledger owner: per-user HTTP callers each have their own)."""
    tokens = ConfirmationTokens()
    quote = Quote(IMAGE, "digest", 0.002, "2 images", {})
    token = tokens.issue("user:alice", quote)
    assert tokens.redeem(token, "user:bob", quote) is not None
    assert tokens.redeem(token, "user:alice", Quote(IMAGE, "digest", 0.004, "4 images", {})) is not None
    assert tokens.redeem(token, "user:alice", Quote(IMAGE, "other", 0.002, "2 images", {})) is not None
    assert tokens.redeem(token, "user:alice", quote) is None
    assert tokens.redeem(token, "user:alice", quote) == "it was already used"
    another_process = ConfirmationTokens()
    assert another_process.redeem(tokens.issue("user:alice", quote), "user:alice", quote) is not None


async def test_tokens_expire() -> None:
    now = [1000.0]
    tokens = ConfirmationTokens(ttl_seconds=60, clock=lambda: now[0])
    quote = Quote(IMAGE, "d", 0.002, "2 images", {})
    token = tokens.issue("local", quote)
    now[0] += 61
    assert tokens.redeem(token, "local", quote) == "it has expired"


async def test_every_paying_tool_asks_before_paying(settings: Settings, emulator: EmulatorServer) -> None:
    server = make_server(settings, confirm_above_usd=0.0)
    async with Client(server) as client:
        before = submissions(emulator)
        for tool in PAYING:
            args: dict[str, Any] = {"endpoint_id": IMAGE}
            args |= {"inputs": [fresh_input()]} if tool == "fal_realtime" else {"input": fresh_input()}
            result = await call(client, tool, args)
            assert error_of(result)["kind"] == "approval_required", (tool, text_of(result))
    assert submissions(emulator) == before


async def test_budgets_from_the_ledger(settings: Settings, emulator: EmulatorServer, mode: str) -> None:
    server = make_server(settings, budget_usd_per_day=0.005, budget_usd_per_session=1.0)
    async with Client(server, mode=mode) as client:
        before = submissions(emulator)
        first = await call(client, "fal_subscribe", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert not first.is_error, text_of(first)
        spend = structured(first)["spend"]
        assert "$0.002 of $0.005" in spend and "$0.003 left" in spend, spend
        assert spend in text_of(first)
        second = await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert "$0.004 of $0.005" in structured(second)["spend"]
        third = await call(client, "queue_submit", {"endpoint_id": IMAGE, "input": fresh_input()})
        error = error_of(third)
        assert error["kind"] == "budget" and "FAL_MCP_BUDGET_USD_PER_DAY" in text_of(third), text_of(third)
    assert submissions(emulator) == before + 2
    # A new process (a new session) still sees the day's spend in the shared ledger.
    async with Client(make_server(settings, budget_usd_per_day=0.005)) as client:
        again = await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert error_of(again)["kind"] == "budget"
    assert submissions(emulator) == before + 2


async def test_session_budget_counts_only_this_process(settings: Settings, emulator: EmulatorServer) -> None:
    async with Client(make_server(settings, budget_usd_per_session=0.003)) as client:
        assert not (await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})).is_error
        refused = await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert error_of(refused)["kind"] == "budget"
    async with Client(make_server(settings, budget_usd_per_session=0.003)) as client:
        result = await call(client, "fal_run", {"endpoint_id": IMAGE, "input": fresh_input()})
        assert not result.is_error, text_of(result)
        assert "this session ~$0.002 of $0.003 ($0.001 left)" in structured(result)["spend"]
        assert "Estimated cost $0.002." in text_of(result), text_of(result)


async def test_unknown_cost_with_a_budget_asks(settings: Settings, emulator: EmulatorServer) -> None:
    """No unit price and fal's estimate API failing: the cost is unknown, so a budget cannot pass it silently."""
    endpoint = "openrouter/router"
    rule = emulator.state.faults.add("400", role="platform", method="POST", path="/pricing/estimate$")
    try:
        answer = Answering("decline")
        server = make_server(settings, budget_usd_per_day=10.0)
        args = {"endpoint_id": endpoint, "input": {"prompt": f"hi {uuid.uuid4().hex}", "model": "google/gemini-flash"}}
        before = submissions(emulator, endpoint)
        async with Client(server) as client:
            asked = await call(client, "fal_run", args)
            assert error_of(asked)["kind"] == "approval_required"
            assert "cannot be estimated" in text_of(asked)
        async with Client(server, elicitation_callback=answer) as client:
            declined = await call(client, "fal_run", args)
            assert error_of(declined)["kind"] == "declined"
        assert answer.asked and "cost unknown" in answer.asked[0].message
        assert submissions(emulator, endpoint) == before
    finally:
        rule.count = 0


async def test_require_approval_marks_every_paying_tool(settings: Settings) -> None:
    async with Client(make_server(settings, require_approval=True)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name, tool in tools.items():
        assert bool((tool.meta or {}).get(REQUIRES_USER_INTERACTION)) is (name in PAYING), name
    async with Client(make_server(settings)) as client:
        plain = (await client.list_tools()).tools
    assert not any(REQUIRES_USER_INTERACTION in (t.meta or {}) for t in plain)


async def test_paying_tools_warn_of_cost_in_their_description(settings: Settings) -> None:
    async with Client(make_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name, tool in tools.items():
        assert ("Costs money" in (tool.description or "")) is (name in PAYING), name


async def test_another_callers_token_is_refused_over_per_user_http(tmp_path: Any) -> None:
    """Two callers of one --per-user HTTP server (each with their own fal key): Bob cannot pay with the token
    Alice's call was given, even for her exact input; Alice can, once."""
    import httpx2

    from fal_mcp.emulator.config import EmulatorConfig
    from tests.server.test_http_hardening import RawSession, sse_messages
    from tests.server.test_transports import ALICE_KEY, BOB_KEY, HttpServer, server_env

    def outcome(response: Any) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        messages = sse_messages(response.text) if "data:" in response.text else [response.json()]
        return next(m for m in messages if "result" in m)["result"]

    with EmulatorServer(EmulatorConfig(time_scale=0.02)) as emulator:
        env = server_env(tmp_path, FAL_MCP_BASE_URL=emulator.base_url, FAL_MCP_CONFIRM_ABOVE_USD="0")
        server = HttpServer(tmp_path, ["--per-user"], env)
        try:
            async with httpx2.AsyncClient(timeout=30) as http:
                alice, bob = RawSession(http, server.url, ALICE_KEY), RawSession(http, server.url, BOB_KEY)
                await alice.open()
                await bob.open()
                args = {"endpoint_id": IMAGE, "input": fresh_input()}
                asked = outcome(await alice.post(alice.tool_call(1, "queue_submit", args)))
                error = asked["_meta"]["fal-mcp/error"]
                assert error["kind"] == "approval_required"
                with_token = {**args, "confirm_token": error["confirm_token"]}
                stolen = outcome(await bob.post(bob.tool_call(2, "queue_submit", with_token)))
                assert stolen["isError"] and stolen["_meta"]["fal-mcp/error"]["kind"] == "approval_required"
                assert "another input, price, caller" in stolen["content"][0]["text"]
                assert submissions(emulator) == 0
                approved = outcome(await alice.post(alice.tool_call(3, "queue_submit", with_token)))
                assert not approved.get("isError"), approved
                assert submissions(emulator) == 1
        finally:
            server.stop()
