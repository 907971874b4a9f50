"""Fault injection for the gateway roles: the failures a real network and fal's edge produce.

Kinds (``KINDS``):

- ``429`` / ``429_no_retry_after``: fal's concurrency answer, with or without ``Retry-After``.
- ``502`` / ``503``: an ingress (nginx) error page — HTML, **no** ``x-fal-request-id`` — the case
  fal_client retries.
- ``drop_before``: the connection closes before the request is processed (nothing happened).
- ``drop_after``: the request is fully processed (e.g. enqueued) but the response is lost — the
  ambiguous case a client must not resolve by blindly resubmitting.
- ``slow``: the response is delayed by ``delay_seconds``.
- ``sse_break``: an event stream is cut after its first event (never reaching its final event).
- ``400``: a refusal of the request's content, in the Platform API's error shape (``validation_error``).

Rules match a role (``queue run rest cdn platform``), method and path regex, fire with a
probability (seeded RNG) and optionally only ``count`` times ("the next 2 submits get 503").
Configure per test through ``state.faults`` or from the environment::

    FAL_EMULATOR_FAULTS="rate=0.2,kinds=429,503,drop,slow,sse_break,roles=queue,run,seed=7,delay=0.5"
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fal_mcp.log import get_logger

FAULTS_ENV = "FAL_EMULATOR_FAULTS"
GATEWAY_ROLES = ("queue", "run", "rest", "cdn", "platform")
KINDS = ("429", "429_no_retry_after", "502", "503", "drop_before", "drop_after", "slow", "sse_break")
# Not a transient fault a client should ride out, so not among ``KINDS`` (what "every kind" means): a refusal.
REFUSALS = ("400",)
ALIASES = {"drop": "drop_before", "lost_response": "drop_after", "rate_limit": "429", "break": "sse_break"}

log = get_logger(__name__)


def _kind(name: str) -> str:
    kind = ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind not in KINDS + REFUSALS:
        known = ", ".join(KINDS + REFUSALS)
        raise ValueError(f"unknown fault kind {name!r}; known: {known} (aliases {', '.join(ALIASES)})")
    return kind


def _tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass
class FaultRule:
    """One way to fail. ``count=None`` fires forever; otherwise it is used up after ``count`` firings."""

    kinds: tuple[str, ...]
    probability: float = 1.0
    count: int | None = None
    roles: tuple[str, ...] = GATEWAY_ROLES
    methods: tuple[str, ...] = ()  # empty: any method
    path: str | None = None  # regex searched in the request path (e.g. "/requests/.*/status$")
    delay_seconds: float = 1.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        self.kinds = tuple(_kind(k) for k in _tuple(self.kinds))
        self.roles = tuple(r.lower() for r in _tuple(self.roles))
        self.methods = tuple(m.upper() for m in _tuple(self.methods))

    def matches(self, role: str, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if role not in self.roles or (self.methods and method.upper() not in self.methods):
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass
class FaultConfig:
    """Faults active from start-up: a probabilistic rule from ``rate``/``kinds`` plus explicit ``rules``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = KINDS
    roles: tuple[str, ...] = GATEWAY_ROLES
    methods: tuple[str, ...] = ()
    path: str | None = None
    seed: int | None = None
    delay_seconds: float = 1.0
    rules: list[FaultRule] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> FaultConfig:
        """``key=value`` pairs split on commas; a bare item extends the previous list (``kinds=429,503``)."""
        lists: dict[str, list[str]] = {"kinds": [], "roles": [], "methods": []}
        scalars: dict[str, str] = {}
        current: str | None = None
        for token in (t.strip() for t in spec.split(",")):
            if not token:
                continue
            if "=" in token:
                key, value = (part.strip() for part in token.split("=", 1))
                key = {"kind": "kinds", "role": "roles", "method": "methods", "delay": "delay_seconds"}.get(key, key)
                if key in lists:
                    lists[key].append(value)
                elif key in ("rate", "seed", "path", "delay_seconds"):
                    scalars[key] = value
                else:
                    raise ValueError(f"unknown fault setting {key!r} in {spec!r}")
                current = key
            elif current in lists:
                lists[current].append(token)
            else:
                raise ValueError(f"stray item {token!r} in fault spec {spec!r}")
        config = cls(
            rate=float(scalars.get("rate", "0")),
            seed=int(scalars["seed"]) if "seed" in scalars else None,
            path=scalars.get("path"),
            delay_seconds=float(scalars.get("delay_seconds", "1")),
        )
        if lists["kinds"]:
            config.kinds = tuple(_kind(k) for k in lists["kinds"])
        if lists["roles"]:
            config.roles = tuple(r.lower() for r in lists["roles"])
        if lists["methods"]:
            config.methods = tuple(m.upper() for m in lists["methods"])
        if not 0.0 <= config.rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {config.rate}")
        return config

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultConfig:
        spec = env.get(FAULTS_ENV, "").strip()
        return cls.parse(spec) if spec else cls()


@dataclass(frozen=True)
class FiredFault:
    kind: str
    method: str
    path: str


class FaultInjector:
    """Decides, per gateway request, whether and how it fails. Thread-safe: tests drive it from their thread."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        config = config or FaultConfig()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._rules: list[FaultRule] = list(config.rules)
        if config.rate > 0:
            self._rules.append(
                FaultRule(
                    kinds=config.kinds,
                    probability=config.rate,
                    roles=config.roles,
                    methods=config.methods,
                    path=config.path,
                    delay_seconds=config.delay_seconds,
                )
            )
        self.fired: list[FiredFault] = []

    def add(
        self,
        kind: str | Iterable[str],
        *,
        count: int | None = None,
        probability: float = 1.0,
        role: str | Iterable[str] | None = None,
        method: str | Iterable[str] | None = None,
        path: str | None = None,
        delay_seconds: float = 1.0,
        retry_after: int = 1,
    ) -> FaultRule:
        """Add a rule, e.g. ``add("503", count=2, role="queue", method="POST")`` for "the next 2 submits get 503"."""
        rule = FaultRule(
            kinds=_tuple(kind),
            probability=probability,
            count=count,
            roles=_tuple(role) or GATEWAY_ROLES,
            methods=_tuple(method),
            path=path,
            delay_seconds=delay_seconds,
            retry_after=retry_after,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.fired.clear()

    def seed(self, value: int) -> None:
        with self._lock:
            self._rng.seed(value)

    def pick(self, role: str, method: str, path: str) -> tuple[str, FaultRule] | None:
        """The fault for this request, if any; consumes one use of a counted rule."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(role, method, path):
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                kind = rule.kinds[0] if len(rule.kinds) == 1 else self._rng.choice(rule.kinds)
                self.fired.append(FiredFault(kind, method, path))
                return kind, rule
        return None


INGRESS_HTML = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}


async def _drop_connection(send: Send) -> None:
    """Close the client's socket without (more of) a response.

    ASGI has no "close without answering", and uvicorn answers 500 when an app raises before
    responding; so we reach the connection's transport through uvicorn's bound ``send``.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("emulated dropped connection (server does not expose its transport)")
    transport.close()
    # Let the server notice the disconnect before the app returns, so it does not try to answer.
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Pure ASGI: applies ``injector``'s decision to gateway-role HTTP requests (first path segment)."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        role = path.lstrip("/").split("/", 1)[0]
        picked = self.injector.pick(role, scope["method"], path) if role in GATEWAY_ROLES else None
        if picked is None:
            await self.app(scope, receive, send)
            return
        kind, rule = picked
        log.info("emulator fault", kind=kind, method=scope["method"], path=path)
        if kind in ("429", "429_no_retry_after"):
            headers = [
                (b"x-fal-request-id", str(uuid.uuid4()).encode()),
                (b"x-fal-needs-retry", b"1"),
                (b"x-fal-error-type", b"concurrent_requests_limit"),
            ]
            if kind == "429":
                headers.append((b"retry-after", str(rule.retry_after).encode()))
            body = b'{"detail":"Too many concurrent requests","error_type":"concurrent_requests_limit"}'
            await _send_json(send, 429, body, headers)
        elif kind == "400":
            await _drain(receive)
            body = b'{"error":{"type":"validation_error","message":"Invalid request parameters"}}'
            await _send_json(send, 400, body, [])
        elif kind in ("502", "503"):
            code = int(kind)
            html = INGRESS_HTML.format(code=code, reason=_REASONS[code]).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(html)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": html})
        elif kind == "drop_before":
            await _drain(receive)  # unread bytes would turn our FIN into a RST (a different client error)
            await _drop_connection(send)
        elif kind == "drop_after":
            await self.app(scope, receive, _swallow)
            await _drop_connection(send)
        elif kind == "slow":
            await anyio.sleep(rule.delay_seconds)
            await self.app(scope, receive, send)
        else:  # sse_break
            await self.app(scope, receive, _SseBreaker(send))


async def _drain(receive: Receive) -> None:
    """Read (and ignore) the whole request body."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _swallow(message: Message) -> None:
    """A ``send`` that loses the response."""


class _SseBreaker:
    """Forwards an event stream's first event, then drops the connection instead of sending more."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.is_sse = False
        self.events = 0
        self.dropped = False

    async def __call__(self, message: Message) -> None:
        if self.dropped:
            return
        if message["type"] == "http.response.start":
            headers: list[tuple[bytes, bytes]] = message.get("headers", [])
            self.is_sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)
        elif self.is_sse and message["type"] == "http.response.body":
            if self.events >= 1:
                self.dropped = True
                await _drop_connection(self.send)
                return
            if b"data:" in message.get("body", b""):
                self.events += 1
        await self.send(message)
