"""RetryPolicy's decision table, its delays, and how FalHTTP applies them over real loopback HTTP."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from email.utils import formatdate

import httpx2
import pytest

from fal_mcp.digest import input_digest
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal._http import FalHTTP, request_was_sent
from fal_mcp.fal.auth import credentials_from_key
from fal_mcp.fal.client import FalClient
from fal_mcp.fal.errors import FalConnectionError, FalError, RateLimitError
from fal_mcp.fal.hosts import FalHosts
from fal_mcp.fal.retry import ReconcilePolicy, RetryMode, RetryPolicy
from tests.fal.conftest import TEST_KEY, MakeEmulator

IDEM, SUBMIT, NONE = RetryMode.IDEMPOTENT, RetryMode.SUBMIT, RetryMode.NONE
WITH_ID = {"x-fal-request-id": "0d6c6a5e-1111-4222-8333-944445555666"}
NGINX = "<html><center>nginx</center></html>"

# (status, headers, body) → should it be retried as (IDEMPOTENT, SUBMIT, NONE)?
RESPONSE_TABLE = [
    (408, WITH_ID, "", (True, True, False)),
    (409, WITH_ID, "", (True, False, False)),
    (429, WITH_ID, "", (True, True, False)),
    (429, {**WITH_ID, "X-Fal-Needs-Retry": "0"}, "", (False, False, False)),
    (500, WITH_ID, "", (False, False, False)),
    (500, {**WITH_ID, "X-Fal-Needs-Retry": "1"}, "", (True, False, False)),
    # fal's edge (nginx) page: 503 means it had no upstream to forward to (nothing queued); a 502/504 may come
    # after it forwarded the request (upstream reset or timed out), so a submit is not repeated blindly.
    (502, {}, NGINX, (True, False, False)),
    (502, WITH_ID, "", (True, False, False)),  # fal answered: a submit may have been queued
    (503, {}, NGINX, (True, True, False)),
    (503, WITH_ID, "", (True, True, False)),
    (503, {**WITH_ID, "X-Fal-Retryable": "false"}, "", (False, False, False)),
    (504, {}, NGINX, (True, False, False)),
    (504, {**WITH_ID, "X-Fal-Request-Timeout-Type": "user"}, "", (False, False, False)),  # the caller's own deadline
    (400, WITH_ID, "", (False, False, False)),
    (401, WITH_ID, "", (False, False, False)),
    (404, WITH_ID, "", (False, False, False)),
    (422, WITH_ID, "", (False, False, False)),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), RESPONSE_TABLE)
def test_should_retry_response(status: int, headers: dict[str, str], body: str, expected: tuple[bool, ...]) -> None:
    policy = RetryPolicy()
    got = tuple(policy.should_retry_response(mode, status, headers, body) for mode in (IDEM, SUBMIT, NONE))
    assert got == expected


def test_should_retry_exception() -> None:
    request = httpx2.Request("POST", "https://queue.fal.run/x/y")
    policy = RetryPolicy()
    not_sent = [httpx2.ConnectError("refused", request=request), httpx2.ConnectTimeout("t", request=request)]
    maybe_sent = [
        httpx2.ReadError("reset", request=request),
        httpx2.RemoteProtocolError("closed", request=request),
        httpx2.ReadTimeout("slow", request=request),
        httpx2.WriteError("broken pipe", request=request),
    ]
    for exc in not_sent:
        assert [policy.should_retry_exception(m, exc) for m in (IDEM, SUBMIT, NONE)] == [True, True, False]
    for exc in maybe_sent:  # a submit whose answer was lost is reconciled, never re-sent here
        assert [policy.should_retry_exception(m, exc) for m in (IDEM, SUBMIT, NONE)] == [True, False, False]


def test_delay_backs_off_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0.25)
    for attempt, nominal in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(nominal * 0.75 <= d <= nominal * 1.25 for d in delays), (attempt, delays)
    exact = RetryPolicy(base_delay=0.1, jitter=0.0)
    assert exact.delay(3) == pytest.approx(0.4)


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_retry_after=5.0)
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=0.0) == 0.0
    assert policy.delay(1, retry_after=3600.0) == 5.0  # a huge Retry-After waits at most max_retry_after
    assert RetryPolicy.retry_after({"Retry-After": "3"}) == 3.0
    assert RetryPolicy.retry_after({"retry-after-ms": "250"}) == 0.25
    assert RetryPolicy.retry_after({"Retry-After": "soon"}) is None
    assert RetryPolicy.retry_after({}) is None
    in_ten = RetryPolicy.retry_after({"Retry-After": formatdate(time.time() + 10, usegmt=True)})
    assert in_ten is not None and 8 <= in_ten <= 10


# -- applied by FalHTTP over loopback -------------------------------------------------------------


def http_for(server: EmulatorServer, policy: RetryPolicy) -> FalHTTP:
    return FalHTTP(
        hosts=FalHosts.for_base_url(server.base_url), credentials=credentials_from_key(TEST_KEY), retry=policy
    )


@pytest.mark.anyio
async def test_retry_after_from_fal_is_waited(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("429", count=1, role="queue", retry_after=1)
    async with http_for(server, RetryPolicy(base_delay=0.001, max_retry_after=0.3)) as http:
        started = time.monotonic()
        await http.request_json("POST", http.url("queue", "emulator/slow"), mode=SUBMIT, json_body={"seconds": 1})
        elapsed = time.monotonic() - started
        assert http.requests_sent == 2
    assert 0.3 <= elapsed < 0.9  # Retry-After: 1, capped at 0.3 s


@pytest.mark.anyio
async def test_retries_stop_at_max_attempts_with_the_mapped_error(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("429_no_retry_after", role="queue")
    async with http_for(server, RetryPolicy(max_attempts=3, base_delay=0.001)) as http:
        with pytest.raises(RateLimitError) as caught:
            await http.request_json("POST", http.url("queue", "emulator/slow"), mode=SUBMIT, json_body={})
        assert http.requests_sent == 3
    assert caught.value.error_type == "concurrent_requests_limit"


@pytest.mark.anyio
async def test_transport_errors_say_whether_the_request_may_have_arrived(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    server.state.faults.add("drop_after", count=1, role="run")
    async with http_for(server, RetryPolicy(max_attempts=3, base_delay=0.001)) as http:
        with pytest.raises(FalConnectionError) as caught:
            await http.request("POST", http.url("run", "emulator/slow"), mode=SUBMIT, json_body={"seconds": 1})
        assert request_was_sent(caught.value) and http.requests_sent == 1  # answer lost: not re-sent

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    hosts = FalHosts.for_base_url(closed)
    async with FalHTTP(hosts=hosts, credentials=credentials_from_key(TEST_KEY), retry=RetryPolicy(3, 0.001)) as http:
        with pytest.raises(FalConnectionError) as caught:
            await http.request("POST", http.url("queue", "a/b"), mode=SUBMIT, json_body={})
        assert not request_was_sent(caught.value) and http.requests_sent == 3  # never arrived: retried


# (fault on the next POST, mode, requests put on the wire, succeeds): one policy, whichever way the request goes
PARITY = [
    ("503", SUBMIT, 2, True),  # the edge had no upstream: nothing was queued, so even a submit goes again
    ("502", SUBMIT, 1, False),  # the edge may have forwarded it: a submit is never repeated
    ("502", IDEM, 2, True),
    ("drop_after", SUBMIT, 1, False),  # processed, answer lost: not re-sent
    ("drop_after", IDEM, 2, True),
    ("drop_before", IDEM, 2, True),
    ("429", NONE, 1, False),
]


@pytest.mark.anyio
@pytest.mark.parametrize("via", ["request", "stream"])
@pytest.mark.parametrize(("fault", "mode", "sent", "succeeds"), PARITY)
async def test_request_and_stream_follow_the_same_retry_policy(
    make_emulator: MakeEmulator, via: str, fault: str, mode: RetryMode, sent: int, succeeds: bool
) -> None:
    server = make_emulator()
    server.state.faults.add(fault, count=1, role="queue", method="POST")
    async with http_for(server, RetryPolicy(max_attempts=3, base_delay=0.001)) as http:
        url = http.url("queue", "emulator/slow")

        async def send() -> dict:
            if via == "request":
                return (await http.request("POST", url, mode=mode, json_body={"seconds": 1})).json()
            async with http.stream("POST", url, mode=mode, json_body={"seconds": 1}) as response:
                await response.aread()
                return response.json()

        if succeeds:
            assert (await send())["request_id"]
        else:
            with pytest.raises(FalError):
                await send()
        assert http.requests_sent == sent


# -- fal's backup domains (fal_client 1.0.3: fal.run → falrun.com, queue.fal.run → queue.falrun.com) -------------


def test_real_hosts_have_fals_backup_domains_and_the_key_may_go_there() -> None:
    hosts = FalHosts()
    assert (
        hosts.backup_url("https://queue.fal.run/fal-ai/flux/dev?x=1") == "https://queue.falrun.com/fal-ai/flux/dev?x=1"
    )
    assert hosts.backup_url("https://fal.run/fal-ai/flux/dev") == "https://falrun.com/fal-ai/flux/dev"
    assert hosts.backup_url("https://rest.fal.ai/storage") is None
    assert hosts.owns_url("https://queue.falrun.com/x") and not hosts.owns_url("https://evil.falrun.com/x")
    assert FalHosts.for_base_url("http://127.0.0.1:1").backups == ()


def _unreachable_with_backup(server: EmulatorServer) -> FalHosts:
    """Every role on a port nobody listens on, whose backup domain is the emulator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    return replace(FalHosts.for_base_url(closed), backups=((closed, server.base_url),))


@pytest.mark.anyio
async def test_a_main_domain_that_cannot_be_reached_falls_back_to_its_backup_once(make_emulator: MakeEmulator) -> None:
    server = make_emulator()
    hosts = _unreachable_with_backup(server)
    data = {"seconds": 1, "case": "backup domain"}
    async with FalClient(credentials=credentials_from_key(TEST_KEY), hosts=hosts, retry=RetryPolicy(3, 0.001)) as fal:
        handle = await fal.queue.submit("emulator/slow", data)  # the key went to the backup: the emulator wants it
        assert fal.http.requests_sent == 2  # the refused connection, then the backup
        _, output = await fal.queue.subscribe("emulator/slow", {"seconds": 2})
    assert server.state.submissions[f"emulator/slow {input_digest(data)}"] == 1
    assert handle.request_id and output["seconds"] == 2


@pytest.mark.anyio
async def test_a_request_that_reached_the_main_domain_never_goes_to_the_backup(make_emulator: MakeEmulator) -> None:
    primary, backup = make_emulator(), make_emulator()
    primary.state.faults.add("drop_after", count=1, role="queue", method="POST")
    hosts = replace(FalHosts.for_base_url(primary.base_url), backups=((primary.base_url, backup.base_url),))
    data = {"seconds": 1, "case": "no backup after sending"}
    async with FalClient(
        credentials=credentials_from_key(TEST_KEY),
        hosts=hosts,
        retry=RetryPolicy(3, 0.001),
        reconcile=ReconcilePolicy(lookups=1),
    ) as fal:
        handle = await fal.queue.submit("emulator/slow", data)  # the lost answer is found in history, not re-sent
    assert handle.reconciled
    assert primary.state.submissions[f"emulator/slow {input_digest(data)}"] == 1
    assert not backup.state.submissions
