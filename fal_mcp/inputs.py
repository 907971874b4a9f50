"""Checks before spending money: local files uploaded, input validated against the model's schema, cost known.

Validation errors name the field, the rule and the allowed values, in the same shape as fal's own 422s,
so the model can fix its call without a paid round trip.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fal_mcp.digest import input_digest
from fal_mcp.failures import NOTHING_PAID, ToolFailure
from fal_mcp.fal import errors as fe
from fal_mcp.fal.schemas import accept_null_for_optional, replace_values
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.config import Settings
    from fal_mcp.fal.client import FalClient

log = get_logger(__name__)

_URLISH = re.compile(r"^(https?|data|blob):", re.IGNORECASE)


@dataclass
class PreparedInput:
    data: dict[str, Any]
    endpoint_id: str = ""
    schema: Any = None  # fal_mcp.fal.catalog.ModelSchema when the model's schema could be fetched
    cost_estimate_usd: float | None = None
    cost_basis: str = ""
    digest: str = ""
    local_files: list[tuple[tuple[str | int, ...], Any]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_EXPLICIT_PATH = ("/", "./", "../", "~", "file:")


def local_path_candidate(value: str) -> tuple[str, bool] | None:
    """(path, explicit) when a file-field value names a local file rather than a URL or model id.

    Explicit forms (``/``, ``./``, ``~``, ``file://``) must exist; a bare ``cat.png`` is taken as a path
    only if such a file exists, since file fields may also hold ids like ``org/model``.
    """
    if not value or _URLISH.match(value) or "\n" in value or len(value) > 4096:
        return None
    if value.startswith("file://"):
        return value[len("file://") :], True
    if value.startswith(_EXPLICIT_PATH):
        return value, True
    if re.search(r"\.[A-Za-z0-9]{2,5}$", value):
        return value, False
    return None


def resolve_local_files(
    settings: Settings, roots: tuple[Path, ...], data: dict[str, Any], file_fields: list[str]
) -> list[tuple[tuple[str | int, ...], Any]]:
    """(location, ReadableFile) for every local path in a file field, each checked by the file guard."""
    from fal_mcp.fal.schemas import find_file_values
    from fal_mcp.guards import FilePolicy, resolve_readable

    policy = FilePolicy(roots=roots, allow_dotfiles=settings.allow_dotfiles, max_read_bytes=settings.max_upload_bytes)
    base = roots[0] if roots else Path.cwd()
    fields = list(file_fields) or [k for k in data if k.endswith(("_url", "_urls"))]
    found = []
    for location, value in find_file_values(data, fields):
        candidate = local_path_candidate(value)
        if candidate is None:
            continue
        raw, explicit = candidate
        if not explicit and not (base / raw).is_file():
            continue
        found.append((location, resolve_readable(policy, raw, base)))
    return found


def _allowed(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"]
    bounds = {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema}
    if bounds:
        return bounds
    members = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(members, list):  # every variant's values, flattened (nested unions too), without null
        allowed: list[Any] = []
        for member in members:
            value = _allowed(member) if isinstance(member, dict) and member.get("type") != "null" else None
            allowed.extend(value if isinstance(value, list) else [value] if value is not None else [])
        return allowed or None
    return schema.get("type") or schema.get("$ref")


def validate_input(data: dict[str, Any], input_schema: dict[str, Any]) -> None:
    """Raise :class:`ToolFailure` listing every violation (field, rule, allowed values).

    ``null`` for a field that is not required passes, as on fal (see :func:`accept_null_for_optional`).
    """
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(input_schema, default=jsonschema.Draft202012Validator)
    validator = validator_cls(accept_null_for_optional(input_schema))  # fal takes null for "not given"
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path) or "(input)"
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            path = f"{path}.{missing}" if path != "(input)" else missing
        entry: dict[str, Any] = {"field": path, "rule": error.validator, "message": error.message[:300]}
        if error.validator in ("enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "type", "anyOf"):
            entry["allowed"] = _allowed(error.schema) if isinstance(error.schema, dict) else error.validator_value
        problems.append(entry)
        if len(problems) >= 20:
            break
    if problems:  # the error text lists each field with its rule and allowed values (server/errors.py)
        names = ", ".join(dict.fromkeys(p["field"] for p in problems))
        raise ToolFailure(
            f"input does not match the model's schema ({names}); nothing was submitted or charged.",
            kind="invalid_input",
            fields=problems,
        )


async def estimate_cost(fal: FalClient, endpoint_id: str, schema: Any, data: dict[str, Any], *, ask_fal: bool) -> Cost:
    """This call's cost: unit price × the billing units its input uses (schema defaults filled in);
    when the input cannot tell (compute seconds, tokens, an output size only the run decides) and
    ``ask_fal``, fal's own estimate of an average call (``historical_api_price``). Unknown otherwise."""
    from fal_mcp.fal.pricing import billing_quantity

    price = getattr(schema, "unit_price", None)
    unit = getattr(schema, "unit", None)
    if price is not None:
        quantity = billing_quantity(unit, data, schema.input_schema)
        if quantity is not None:
            return Cost(round(price * quantity.units, 6), f"{quantity.basis} at ${price:g} per {unit}")
    why = (
        f"the input does not tell how many '{unit}' it will use"
        if price is not None
        else "no unit price is known for this model"
    )
    if not ask_fal:
        return Cost(None, why)
    try:
        estimate = await fal.catalog.estimate_cost(endpoint_id, call_quantity=1)
    except fe.FalError as exc:  # refused (e.g. 400/404): as unknown as no answer
        return Cost(None, f"{why}, and fal's estimate API refused ({exc.message})")
    if estimate.source == "api" and estimate.total_cost is not None:
        return Cost(round(estimate.total_cost, 6), f"fal's estimate of an average call ({why})")
    return Cost(None, f"{why}, and fal's estimate API gave no answer ({estimate.note or 'unavailable'})")


@dataclass(frozen=True)
class Cost:
    usd: float | None
    basis: str


# fal's servers (and the msgpack of its realtime protocol) take signed or unsigned 64-bit integers at most.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def check_sendable(data: Any) -> None:
    """Refuse values standard JSON (and msgpack) cannot carry, before anything is sent or recorded.

    NaN and ±Infinity are not JSON (Python would send the non-standard ``NaN`` token); integers beyond
    64 bits fit no fal model's field and break msgpack. Each offending field is named.
    """
    problems: list[dict[str, Any]] = []

    def walk(value: Any, path: str) -> None:
        if len(problems) >= 20:
            return
        if isinstance(value, float) and not math.isfinite(value):
            problems.append({"field": path, "rule": "finite_number", "message": f"{value} is not a JSON number"})
        elif isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
            problems.append(
                {"field": path, "rule": "int64", "message": "integer beyond 64 bits", "allowed": [_INT_MIN, _INT_MAX]}
            )
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(data, "")
    if problems:
        fields = ", ".join(p["field"] for p in problems)
        raise ToolFailure(
            f"input has values that cannot be sent to fal (NaN/Infinity, or integers beyond 64 bits) in: {fields}. "
            + NOTHING_PAID,
            kind="invalid_argument",
            fields=problems,
            next_step="Replace them with ordinary finite numbers and call again.",
        )


async def plan_input(
    fal: FalClient, settings: Settings, endpoint_id: str, data: dict[str, Any], *, roots: tuple[Path, ...]
) -> PreparedInput:
    """Fetch the schema (cached) and check local files, spending nothing yet.

    The digest identifies "the same request" for re-attachment: local files count by path, size and
    modification time, since each upload would get a fresh URL.
    """
    if not isinstance(data, dict):
        raise ToolFailure("input must be a JSON object of the model's fields", kind="invalid_argument")
    check_sendable(data)
    prepared = PreparedInput(data=copy.deepcopy(data), endpoint_id=endpoint_id)
    try:
        prepared.schema = await fal.catalog.get_schema(endpoint_id)
    except (fe.NotFoundError, fe.FalConnectionError, fe.ServerError, fe.BadRequestError) as exc:
        prepared.notes.append(f"schema unavailable ({exc.message}); input not checked before submitting")
        log.info("input.schema_unavailable", endpoint_id=endpoint_id, error=exc.message)
    file_fields = list(getattr(prepared.schema, "file_fields", None) or [])
    prepared.local_files = resolve_local_files(settings, roots, prepared.data, file_fields)
    identity = {
        location: f"file:{readable.path}:{readable.size}:{readable.mtime_ns}"
        for location, readable in prepared.local_files
    }
    prepared.digest = input_digest(replace_values(prepared.data, identity) if identity else prepared.data)
    return prepared


async def check_input(fal: FalClient, settings: Settings, prepared: PreparedInput) -> Cost:
    """Validate against the schema and estimate the cost, spending nothing (files are not uploaded yet).

    fal's estimate API (a free request) is asked only when a spend limit, budget or approval rule needs it.
    """
    if prepared.schema is not None and settings.validate_input:
        # Checked before any upload: each local file stands in as the URL it will become.
        stand_ins = {loc: f"https://upload.invalid/{file.path.name}" for loc, file in prepared.local_files}
        validate_input(replace_values(prepared.data, stand_ins), prepared.schema.input_schema)
    ask_fal = settings.spend_limits.any
    cost = await estimate_cost(fal, prepared.endpoint_id, prepared.schema, prepared.data, ask_fal=ask_fal)
    prepared.cost_estimate_usd, prepared.cost_basis = cost.usd, cost.basis
    if cost.usd is None and f"the cost could not be estimated: {cost.basis}" not in prepared.notes:
        prepared.notes.append(f"the cost could not be estimated: {cost.basis}")
    return cost


async def upload_local_files(fal: FalClient, prepared: PreparedInput) -> None:
    """Upload the checked local files (never re-opened by name) and put their URLs into the input."""
    urls: dict[tuple[str | int, ...], str] = {}
    for location, readable in prepared.local_files:
        with readable.open() as handle:  # the checked file itself, never re-opened by name
            uploaded = await fal.storage.upload_file(handle, content_type=readable.mime_type, file_name=readable.name)
        urls[location] = uploaded.url
        prepared.uploads.append(f"{readable.path} -> {uploaded.url}")
        log.info("input.file_uploaded", field=".".join(map(str, location)), size=readable.size)
    if urls:
        prepared.data = replace_values(prepared.data, urls)
    prepared.local_files = []
