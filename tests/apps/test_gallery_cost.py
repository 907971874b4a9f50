"""The gallery app shows dollars by the one rule everything else uses (``fal_mcp.spend.format_usd``).

The page's ``formatUsd`` is a port of that rule; here headless Chromium runs the page's own function over
prices of every magnitude (exact binary ties included, where JavaScript's ``toFixed`` and Python disagree)
and each answer must equal Python's.
"""

from __future__ import annotations

import json
import random

from fal_mcp.server.apps import GALLERY_HTML
from fal_mcp.spend import format_usd
from tests.browser import open_page

EDGES = [
    0.0, 0.001, 0.0010, 0.0035, 0.00012345, 0.1, 0.125, 0.3, 0.035, 0.99996, 0.999996, 0.015625, 0.0001953125,
    1.0, 1.005, 1.125, 2.675, 12.5, 0.5, 999.995, 1234.5, 1234567.891, 1e-12, 5e-11, 1.5e-10, 2.5e-10,
    -0.001, -1234.5, 3e21,
]  # fmt: skip


def amounts() -> list[float]:
    rng = random.Random(20261126)
    prices = [0.0001, 0.00025, 0.001, 0.0035, 0.003, 0.0125, 0.025, 0.04, 0.05, 0.125, 0.15, 0.4, 0.5]
    products = [n * p for n in range(1, 41) for p in prices]  # what fal's real unit prices add up to
    spread = [10 ** rng.uniform(-11, 7) for _ in range(2000)]
    dyadic = [rng.randrange(1, 1 << 20) / (1 << rng.randrange(1, 24)) for _ in range(1000)]  # exact ties
    return EDGES + products + spread + dyadic


def test_gallery_formats_dollars_exactly_as_format_usd() -> None:
    values = amounts()
    with open_page(GALLERY_HTML.resolve().as_uri()) as page:
        shown = page.evaluate(f"{json.dumps(values)}.map(formatUsd)")
    mismatches = [(v, got, format_usd(v)) for v, got in zip(values, shown, strict=True) if got != format_usd(v)]
    assert not mismatches, mismatches[:10]
    assert shown[:3] == ["$0.00", "$0.001", "$0.001"]  # not toFixed(4)'s "$0.0010"
