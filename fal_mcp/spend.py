"""When money may be spent: the per-call limit, the budgets and the approval rule, in one place.

Nothing here knows MCP. The server asks :func:`decide` before every paid submit, with this call's
cost estimate and what the ledger says was already spent; the answer is to go, to ask the user
first (an elicitation form, or a one-time :class:`ConfirmationTokens` token where the host cannot
show one), or to refuse. Nothing is submitted unless the answer is "go" or an approval was given.

Rules (each a refusal or a question, never a silent pass):

* ``FAL_MCP_MAX_COST_USD``: an estimate above it is refused; an unknown cost asks.
* ``FAL_MCP_BUDGET_USD_PER_DAY`` / ``FAL_MCP_BUDGET_USD_PER_SESSION``: a call that would take the
  estimated spend of the last 24 hours (or of this server process) past the budget is refused; an
  unknown cost asks. What was spent comes from the ledger's cost estimates.
* ``FAL_MCP_CONFIRM_ABOVE_USD``: an estimate above it asks; an unknown cost asks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

# Input fields that usually decide a call's price; shown to the user when asking.
PRICE_DRIVERS = (
    "num_images",
    "image_size",
    "width",
    "height",
    "resolution",
    "aspect_ratio",
    "duration",
    "num_frames",
    "seconds",
    "max_tokens",
    "num_inference_steps",
)
TOKEN_TTL_SECONDS = 600.0
PAYING_TOOLS = ("fal_subscribe", "queue_submit", "fal_run", "fal_stream", "fal_realtime")
# Claude Code asks the user before every call of a tool whose ``_meta`` carries this (FAL_MCP_REQUIRE_APPROVAL).
REQUIRES_USER_INTERACTION = "anthropic/requiresUserInteraction"


@dataclass(frozen=True)
class SpendLimits:
    max_cost_usd: float | None = None
    confirm_above_usd: float | None = None
    budget_usd_per_day: float | None = None
    budget_usd_per_session: float | None = None

    @property
    def budgeted(self) -> bool:
        return self.budget_usd_per_day is not None or self.budget_usd_per_session is not None

    @property
    def any(self) -> bool:
        return self.budgeted or self.max_cost_usd is not None or self.confirm_above_usd is not None


@dataclass(frozen=True)
class Spent:
    """Estimated spend already recorded: in the last 24 hours and in this server process (per caller)."""

    today_usd: float = 0.0
    session_usd: float = 0.0


@dataclass(frozen=True)
class Quote:
    """What one paid call would cost: ``usd`` is ``None`` when it cannot be estimated."""

    endpoint_id: str
    digest: str
    usd: float | None
    basis: str
    drivers: dict[str, Any]

    @property
    def price_key(self) -> str:
        return "unknown" if self.usd is None else f"{self.usd:.6f}"


class Verdict(Enum):
    GO = "go"
    ASK = "ask"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    kind: str = ""  # for a refusal: "cost_limit" or "budget"


def format_usd(amount: float) -> str:
    """A dollar amount as people read it: cents for whole dollars (``$12.50``), and enough significant
    digits below a dollar that a sub-cent limit or price never shows as ``$0.00`` (``$0.001``, ``$0.0035``)."""
    if not math.isfinite(amount):
        return f"${amount}"
    sign, amount = ("-", -amount) if amount < 0 else ("", amount)
    if amount >= 1 or amount == 0:
        return f"{sign}${amount:,.2f}"
    # 4 significant digits, at most 10 decimals, trailing zeros dropped down to cents.
    decimals = min(10, 3 - math.floor(math.log10(amount)))
    text = f"{amount:.{decimals}f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"


def price_drivers(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in PRICE_DRIVERS if key in data and data[key] is not None}


def decide(limits: SpendLimits, quote: Quote, spent: Spent) -> Decision:
    """Go, ask or refuse this call (see the module doc)."""
    usd = quote.usd
    if usd is not None and limits.max_cost_usd is not None and usd > limits.max_cost_usd:
        return Decision(
            Verdict.REFUSE,
            f"the estimated cost {format_usd(usd)} ({quote.basis}) is above this server's per-call limit "
            f"{format_usd(limits.max_cost_usd)} (FAL_MCP_MAX_COST_USD)",
            "cost_limit",
        )
    for name, budget, already in (
        ("FAL_MCP_BUDGET_USD_PER_DAY", limits.budget_usd_per_day, spent.today_usd),
        ("FAL_MCP_BUDGET_USD_PER_SESSION", limits.budget_usd_per_session, spent.session_usd),
    ):
        if budget is not None and usd is not None and already + usd > budget + 1e-9:
            period = "the last 24 hours" if name.endswith("DAY") else "this session"
            left = format_usd(max(budget - already, 0))
            return Decision(
                Verdict.REFUSE,
                f"the estimated cost {format_usd(usd)} would take the spend of {period} to "
                f"{format_usd(already + usd)}, above the budget {format_usd(budget)} ({name}; {left} left)",
                "budget",
            )
    if usd is None and limits.any:
        return Decision(Verdict.ASK, f"its cost cannot be estimated ({quote.basis})")
    if usd is not None and limits.confirm_above_usd is not None and usd > limits.confirm_above_usd:
        return Decision(
            Verdict.ASK,
            f"its estimated cost {format_usd(usd)} is above {format_usd(limits.confirm_above_usd)} "
            "(FAL_MCP_CONFIRM_ABOVE_USD)",
        )
    return Decision(Verdict.GO)


def budget_text(limits: SpendLimits, spent: Spent) -> str | None:
    """One sentence of what was spent and what is left, for every paid result (``None`` without a budget)."""
    parts = []
    for period, budget, used in (
        ("last 24 h", limits.budget_usd_per_day, spent.today_usd),
        ("this session", limits.budget_usd_per_session, spent.session_usd),
    ):
        if budget is not None:
            left = max(budget - used, 0)
            parts.append(f"{period} ~{format_usd(used)} of {format_usd(budget)} ({format_usd(left)} left)")
    return ("Spent: " + "; ".join(parts) + ".") if parts else None


class ConfirmationTokens:
    """One-time approvals for hosts that cannot show a form: a token is bound to the caller, the endpoint,
    the exact input (digest) and the price, expires, and is spent by its first use.

    Signed with a per-process secret: a token from another server process, another caller, another
    input or another price does not verify.
    """

    def __init__(self, ttl_seconds: float = TOKEN_TTL_SECONDS, clock: Any = time.time) -> None:
        self._secret = secrets.token_bytes(32)
        self._ttl = ttl_seconds
        self._clock = clock
        self._used: dict[str, float] = {}  # nonce -> expiry, forgotten once expired
        self._lock = threading.Lock()

    def _mac(self, owner: str, quote: Quote, expires: int, nonce: str) -> str:
        message = "\x1f".join((owner, quote.endpoint_id, quote.digest, quote.price_key, str(expires), nonce))
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def issue(self, owner: str, quote: Quote) -> str:
        expires = int(self._clock() + self._ttl)
        nonce = secrets.token_urlsafe(9)
        return f"ok1.{expires}.{nonce}.{self._mac(owner, quote, expires, nonce)}"

    def redeem(self, token: str, owner: str, quote: Quote) -> str | None:
        """``None`` when the token approves exactly this call (and is now spent), else why not."""
        try:
            version, expires_text, nonce, mac = token.strip().split(".")
            expires = int(expires_text)
        except ValueError:
            return "it is not a confirmation token from this server"
        if version != "ok1" or not hmac.compare_digest(mac, self._mac(owner, quote, expires, nonce)):
            return "it was issued for another input, price, caller or server process"
        now = self._clock()
        if expires < now:
            return "it has expired"
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e >= now}
            if nonce in self._used:
                return "it was already used"
            self._used[nonce] = expires
        return None
