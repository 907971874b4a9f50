"""model_search and model_schema: find a model and learn its inputs before spending anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from fal_mcp.job_service import parse_endpoint
from fal_mcp.server.errors import tool_errors
from fal_mcp.server.outputs import FieldSummary, ModelHit, ModelSchemaOutput, ModelSearchOutput
from fal_mcp.server.state import ServerState

MAX_RESULT_SIZE_KEY = "anthropic/maxResultSizeChars"
MAX_SCHEMA_RESULT_CHARS = 100_000  # fal's largest real model documents are ~20 KB; text and structured both carry them
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


def format_price(unit_price: float | None, unit: str | None, currency: str | None = "USD") -> str | None:
    if unit_price is None:
        return None
    symbol = "$" if (currency or "USD").upper() == "USD" else f"{currency} "
    return f"{symbol}{unit_price:g} per {_one(unit or 'request')}"


def _one(unit: str) -> str:
    """fal names units in the plural ('megapixels', 'compute seconds'); a price is per one of them.

    A counted unit ('1000 characters') stays as it is.
    """
    if unit[:1].isdigit() or not unit.endswith("s") or unit.endswith("ss"):
        return unit
    return unit[:-1]


def _type_of(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "enum"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind if k != "null")
    if kind == "array":
        return f"array[{_type_of(schema.get('items') or {})}]"
    if kind:
        return str(kind)
    variants = schema.get("anyOf") or schema.get("oneOf")
    if variants:
        return "|".join(sorted({_type_of(v) for v in variants if v.get("type") != "null"}))
    return "any"


def summarize_fields(schema: dict[str, Any] | None, file_fields: Sequence[str] = ()) -> list[FieldSummary]:
    """Top-level fields with their rules, in the schema's order."""
    if not schema:
        return []
    required = set(schema.get("required") or [])
    properties: dict[str, Any] = schema.get("properties") or {}
    order = schema.get("x-fal-order-properties") or list(properties)
    top_files = {f.split(".")[0] for f in file_fields}
    fields = []
    for name in [n for n in order if n in properties] + [n for n in properties if n not in order]:
        prop = properties[name] or {}
        enum = prop.get("enum")
        if enum is None:
            for variant in prop.get("anyOf") or prop.get("oneOf") or []:
                enum = (enum or []) + list(variant.get("enum") or [])
        description = (prop.get("description") or "").strip().split("\n")[0][:160] or None
        fields.append(
            FieldSummary(
                name=name,
                type=_type_of(prop),
                required=name in required,
                default=prop.get("default"),
                enum=enum or None,
                minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
                maximum=prop.get("maximum", prop.get("exclusiveMaximum")),
                takes_file=name in top_files,
                description=description,
            )
        )
    return fields


@tool_errors
async def model_search(
    ctx: Context,
    query: Annotated[str | None, Field(description="Free text, e.g. 'text to video'")] = None,
    category: Annotated[str | None, Field(description="e.g. text-to-image, image-to-video, text-to-speech")] = None,
    limit: Annotated[int, Field(ge=1, le=50)] = 10,
    cursor: Annotated[str | None, Field(description="next_cursor of a previous page")] = None,
) -> ModelSearchOutput:
    """Find fal models by text and category (paged). Returns endpoint ids to pass to the other tools."""
    state: ServerState = ctx.request_context.lifespan_context  # type: ignore[assignment]
    fal, _owner = await state.fal_for(ctx)
    page = await fal.catalog.search(query=query, category=category, limit=limit, cursor=cursor)
    return ModelSearchOutput(
        models=[
            ModelHit(
                endpoint_id=m.endpoint_id,
                name=m.display_name or m.endpoint_id,
                category=m.category,
                description=m.description,
                price=format_price(m.unit_price, m.unit, getattr(m, "currency", "USD")),
            )
            for m in page.models
        ],
        next_cursor=page.next_cursor,
        has_more=page.has_more,
    )


@tool_errors
async def model_schema(
    ctx: Context,
    endpoint_id: Annotated[str, Field(description="e.g. fal-ai/flux/dev")],
    full: Annotated[bool, Field(description="Also return the full JSON schemas")] = False,
) -> ModelSchemaOutput:
    """A model's inputs (types, required, defaults, enums, ranges, file fields), outputs, price and an example."""
    state: ServerState = ctx.request_context.lifespan_context  # type: ignore[assignment]
    fal, _owner = await state.fal_for(ctx)
    schema = await fal.catalog.get_schema(parse_endpoint(endpoint_id))
    file_fields = list(schema.file_fields or [])
    return ModelSchemaOutput(
        endpoint_id=schema.endpoint_id,
        name=schema.display_name,
        category=schema.category,
        price=format_price(schema.unit_price, schema.unit, getattr(schema, "currency", "USD")),
        input=summarize_fields(schema.input_schema, file_fields),
        output=summarize_fields(schema.output_schema),
        file_fields=file_fields,
        example_input=schema.example_input or {},
        input_schema=schema.input_schema if full else None,
        output_schema=schema.output_schema if full else None,
    )


def register(server: MCPServer) -> None:
    server.add_tool(model_search, title="Search fal models", annotations=READ_ONLY)
    # Claude Code reads this from the tool's _meta: a full schema (full=true) may pass its default result limit.
    server.add_tool(
        model_schema,
        title="fal model schema",
        annotations=READ_ONLY,
        meta={MAX_RESULT_SIZE_KEY: MAX_SCHEMA_RESULT_CHARS},
    )
