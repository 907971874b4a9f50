"""What a built-in model is: metadata, fal-shaped schemas, validation, and how it runs.

The core runs models (queue, run, stream); the storage/platform/realtime modules publish their
metadata, schemas and prices. Models talk to the emulator only through a :class:`RunContext`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import jsonschema
from jsonschema.exceptions import ValidationError

from fal_mcp.fal.errors import REQUEST_ERROR_STATUS

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

ERRORS_DOC = "https://docs.fal.ai/errors/#"


@dataclass(frozen=True)
class ModelInfo:
    """Catalog metadata, as fal's ``GET /v1/models`` publishes it."""

    endpoint_id: str
    display_name: str
    category: str
    description: str
    tags: tuple[str, ...] = ()
    unit_price: float | None = None  # None: no price published (pricing leaves the id out)
    unit: str | None = None  # fal's unit strings: megapixels, images, seconds, videos, compute seconds, …
    kind: str = "inference"
    duration_estimate: float | None = None  # minutes, as in fal metadata
    status: str = "active"


class ModelError(Exception):
    """Raised by a model to answer like fal: status_code + JSON body (+ optional error_type header/field)."""

    def __init__(self, status_code: int, body: dict[str, Any], error_type: str | None = None) -> None:
        super().__init__(f"{status_code}: {body}")
        self.status_code = status_code
        self.body = body
        self.error_type = error_type


def error_detail(
    error_type: str, msg: str, loc: list[str | int], *, ctx: dict[str, Any] | None = None, input: Any = None
) -> dict[str, Any]:
    """One entry of fal's ``{"detail": [...]}`` list (FastAPI/pydantic shape plus fal's docs ``url``)."""
    entry: dict[str, Any] = {"loc": loc, "msg": msg, "type": error_type, "url": ERRORS_DOC + error_type}
    if ctx is not None:
        entry["ctx"] = ctx
    entry["input"] = input
    return entry


def validation_error(*details: dict[str, Any]) -> ModelError:
    """A 422 ``{"detail": [...]}`` answer (model errors carry no request ``error_type``)."""
    return ModelError(422, {"detail": list(details)})


def request_error(error_type: str, detail: str) -> ModelError:
    """A fal request error (``{"detail", "error_type"}`` + ``X-Fal-Error-Type``) with its documented status."""
    status = REQUEST_ERROR_STATUS.get(error_type, 500)
    return ModelError(status, {"detail": detail, "error_type": error_type}, error_type)


def nullable_optional(schema: dict[str, Any]) -> set[str]:
    """Top-level fields fal accepts ``null`` for: optional ones without a non-null default.

    fal's apps are pydantic models, where a field defaulting to ``None`` is optional whatever its type
    says (real documents type many such fields without a null option, e.g. ``seed: {"type": "integer"}``).
    """
    required = set(schema.get("required", ()))
    return {
        name
        for name, prop in schema.get("properties", {}).items()
        if name not in required
        and isinstance(prop, dict)
        and (prop.get("default") is None or prop.get("nullable") is True)
    }


_TYPE_ERRORS = {
    "string": ("string_type", "Input should be a valid string"),
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "array": ("list_type", "Input should be a valid list"),
}


def _enum_text(values: list[Any]) -> str:
    quoted = [repr(v) if isinstance(v, str) else str(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


# jsonschema keyword → (fal error type, message template, ctx key); {rule} is the keyword's value.
_RULES: dict[str, tuple[str, str, str]] = {
    "minimum": ("greater_than_equal", "Input should be greater than or equal to {rule}", "ge"),
    "maximum": ("less_than_equal", "Input should be less than or equal to {rule}", "le"),
    "exclusiveMinimum": ("greater_than", "Input should be greater than {rule}", "gt"),
    "exclusiveMaximum": ("less_than", "Input should be less than {rule}", "lt"),
    "multipleOf": ("multiple_of", "Input should be a multiple of {rule}", "multiple_of"),
    "minLength": ("string_too_short", "String should have at least {rule} character{s}", "min_length"),
    "maxLength": ("string_too_long", "String should have at most {rule} character{s}", "max_length"),
    "minItems": ("sequence_too_short", "List should have at least {rule} item{s}", "min_length"),
    "maxItems": ("sequence_too_long", "List should have at most {rule} item{s}", "max_length"),
    "pattern": ("string_pattern_mismatch", "String should match pattern '{rule}'", "pattern"),
}


def _to_detail(error: ValidationError) -> dict[str, Any]:
    """Translate one jsonschema error into fal's (pydantic-flavoured) detail entry."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        # e.g. image_size: report the branch whose type matched ("huge" → the enum, a bad width → ImageSize).
        matched = [e for e in error.context if e.relative_path or e.validator != "type"]
        return _to_detail(max(matched or error.context, key=lambda e: len(e.relative_path)))
    loc: list[str | int] = ["body", *error.absolute_path]
    value, rule = error.instance, error.validator_value
    if error.validator == "required":
        field = error.message.split("'")[1] if "'" in error.message else str(rule)
        return error_detail("missing", "Field required", [*loc, field], input=value)
    if error.validator == "const":
        msg = f"Input should be {_enum_text([rule])}"
        return error_detail("literal_error", msg, loc, ctx={"expected": repr(rule)}, input=value)
    if error.validator == "enum":
        return error_detail("one_of", f"Input should be {_enum_text(rule)}", loc, ctx={"expected": rule}, input=value)
    if error.validator == "type":
        error_type, msg = _TYPE_ERRORS.get(rule if isinstance(rule, str) else rule[0], ("value_error", error.message))
        return error_detail(error_type, msg, loc, input=value)
    if error.validator in _RULES:
        error_type, template, ctx_key = _RULES[str(error.validator)]
        msg = template.format(rule=rule, s="" if rule == 1 else "s")
        return error_detail(error_type, msg, loc, ctx={ctx_key: rule}, input=value)
    return error_detail("value_error", error.message, loc, input=value)


class RunContext(Protocol):
    """What a running model may do with the emulator (implemented by the core)."""

    request_id: str
    state: EmulatorState
    base_url: str  # origin only, e.g. http://127.0.0.1:PORT; CDN files are f"{base_url}/cdn/files/..."

    async def log(self, message: str, level: str = "INFO") -> None: ...
    async def sleep(self, seconds: float) -> None: ...
    async def fetch(self, url: str, field: str = "image_url") -> tuple[bytes, str]: ...
    async def store(self, data: bytes, content_type: str, file_name: str) -> dict[str, Any]: ...


class EmulatedModel:
    """A built-in model. Subclasses set the class attributes and implement :meth:`run` (and friends)."""

    info: ClassVar[ModelInfo]
    input_schema: ClassVar[dict[str, Any]]
    output_schema: ClassVar[dict[str, Any]]
    components: ClassVar[dict[str, dict[str, Any]]] = {}  # referenced as "#/components/schemas/<Name>"
    supports_stream: ClassVar[bool] = False
    supports_realtime: ClassVar[bool] = False

    _validator: jsonschema.Draft7Validator | None = None

    @property
    def validator(self) -> jsonschema.Draft7Validator:
        if self._validator is None:
            root = {**self.input_schema, "components": {"schemas": self.components}}
            self._validator = jsonschema.Draft7Validator(root)
        return self._validator

    @property
    def available(self) -> bool:
        """Whether this model can run here (e.g. its media library is installed); see ``unavailable_reason``."""
        return self.unavailable_reason is None

    @property
    def unavailable_reason(self) -> str | None:
        return None

    def validate(self, data: dict[str, Any]) -> None:
        """Check ``data`` against the input schema; raise fal's 422 ``{"detail": [...]}`` listing every problem.

        ``null`` for an optional field without a default passes, as it does on fal (:func:`nullable_optional`).
        """
        nullable = nullable_optional(self.input_schema)
        checked = {k: v for k, v in data.items() if not (v is None and k in nullable)}
        details = [_to_detail(e) for e in self.validator.iter_errors(checked)]
        if details:
            order = list(self.input_schema.get("properties", {}))

            def field_rank(detail: dict[str, Any]) -> int:  # pydantic reports in field order
                field = detail["loc"][1] if len(detail["loc"]) > 1 else None
                return order.index(field) if field in order else len(order)

            raise validation_error(*sorted(details, key=field_rank))

    def with_defaults(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` plus the schema's top-level defaults for absent fields (what the runner's model sees)."""
        merged = dict(data)
        for name, prop in self.input_schema.get("properties", {}).items():
            if merged.get(name) is None and "default" in prop:
                merged[name] = copy.deepcopy(prop["default"])
        return merged

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        """Units billed for one successful call (``x-fal-billable-units``), in ``info.unit``."""
        return 1.0

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(self, data: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
        """Partial outputs; the last event is the final output. Only when ``supports_stream``."""
        raise NotImplementedError
        yield {}  # pragma: no cover - makes this an async generator

    async def realtime(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        """One realtime message in, one result out. Only when ``supports_realtime``."""
        raise NotImplementedError


class DocumentModel(EmulatedModel):
    """A built-in model of a real fal endpoint: its schemas and metadata come from fal's vendored document.

    Subclasses name ``endpoint_id``; the document is in ``fal_mcp/emulator/data/openapi/``.
    """

    endpoint_id: ClassVar[str]

    def __init__(self) -> None:
        from fal_mcp.emulator.catalog import info_for, vendored  # the catalog imports this module

        document = vendored()[self.endpoint_id]
        self.info = info_for(document, runnable=True)  # type: ignore[misc]
        self.input_schema = document.input_schema  # type: ignore[misc]
        self.output_schema = document.output_schema  # type: ignore[misc]
        self.components = document.components  # type: ignore[misc]
