"""Money as the user reads it: one formatter for every dollar amount, so a sub-cent limit never shows as $0.00."""

from __future__ import annotations

import pytest

from fal_mcp.spend import Quote, SpendLimits, Spent, Verdict, budget_text, decide, format_usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (0.001, "$0.001"),
        (0.0035, "$0.0035"),
        (0.25, "$0.25"),
        (0.1, "$0.10"),
        (0.12345, "$0.1235"),
        (0.0030000001, "$0.003"),
        (0.99996, "$1.00"),
        (12.5, "$12.50"),
        (1234.5, "$1,234.50"),
        (1e-9, "$0.000000001"),
        (-0.5, "-$0.50"),
    ],
)
def test_format_usd(amount: float, shown: str) -> None:
    assert format_usd(amount) == shown


def quote(usd: float | None) -> Quote:
    return Quote("fal-ai/flux/dev", "digest", usd, "1 image at $0.0005 per image", {})


def test_sub_cent_limits_and_budgets_show_their_value() -> None:
    refused = decide(SpendLimits(max_cost_usd=0.001), quote(0.0015), Spent())
    assert refused.verdict is Verdict.REFUSE
    assert "estimated cost $0.0015" in refused.reason and "per-call limit $0.001 " in refused.reason
    asked = decide(SpendLimits(confirm_above_usd=0.0005), quote(0.001), Spent())
    assert asked.verdict is Verdict.ASK and "$0.001 is above $0.0005" in asked.reason
    over = decide(SpendLimits(budget_usd_per_day=0.005), quote(0.002), Spent(today_usd=0.004))
    assert over.verdict is Verdict.REFUSE
    assert "to $0.006, above the budget $0.005" in over.reason and "$0.001 left" in over.reason
    text = budget_text(SpendLimits(budget_usd_per_session=0.003), Spent(session_usd=0.002))
    assert text == "Spent: this session ~$0.002 of $0.003 ($0.001 left)."
