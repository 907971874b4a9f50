"""fal's real documents (``shared/data`` next to the checkout, read-only) as test fixtures.

CI has ``shared/`` at ``../shared`` relative to the checkout; ``FAL_MCP_SHARED_DATA`` overrides that.
A missing directory is an error, not a skip: these tests are the project's check against real fal.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [_ROOT.parent / "shared" / "data", _ROOT.parents[1] / "shared" / "data"]


@functools.cache
def shared_data() -> Path:
    override = os.environ.get("FAL_MCP_SHARED_DATA")
    for candidate in [Path(override)] if override else _CANDIDATES:
        if (candidate / "fal-openapi" / "index.json").is_file():
            return candidate
    raise FileNotFoundError(f"fal's real documents are missing: looked in {override or _CANDIDATES}")


@functools.cache
def openapi_index() -> list[dict[str, Any]]:
    return json.loads((shared_data() / "fal-openapi" / "index.json").read_text())


def openapi_doc(endpoint_id: str) -> dict[str, Any]:
    entry = next(e for e in openapi_index() if e["endpoint_id"] == endpoint_id)
    return json.loads((shared_data() / "fal-openapi" / entry["file"]).read_text())


def all_endpoint_ids() -> list[str]:
    return [e["endpoint_id"] for e in openapi_index()]


def real_prices() -> dict[str, dict[str, Any]]:
    """fal's real unit prices and unit strings (``fal-platform/pricing_units__*.json``)."""
    (path,) = (shared_data() / "fal-platform").glob("pricing_units__*.json")
    return json.loads(path.read_text())["prices"]


def platform_spec() -> dict[str, Any]:
    return json.loads((shared_data() / "fal-platform" / "fal_platform_api_v1.openapi.json").read_text())
