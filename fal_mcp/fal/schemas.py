"""fal's per-model OpenAPI → plain, self-contained JSON Schemas, the fields that take files, and an example input.

fal publishes each model as an OpenAPI 3.0 document whose input and output schemas point into
``components.schemas`` with ``$ref``. MCP tools and validators want one JSON Schema per side, with no
references, no OpenAPI-only keywords and fal's display order kept. Everything here is pure (no I/O).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from fal_mcp.fal.errors import FalError

# fal's named ``image_size`` presets (width, height), shared by its image models.
IMAGE_SIZE_PRESETS: Final[dict[str, tuple[int, int]]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}

MAX_DEPTH: Final = 32
# Where a value sits inside an input: keys and list indexes, e.g. ("loras", 0, "path").
Location = tuple[str | int, ...]
ORDER_KEY: Final = "x-fal-order-properties"
# OpenAPI-only keywords that mean nothing (or something else) in plain JSON Schema.
_DROPPED_KEYS: Final = frozenset({"discriminator", "xml", "externalDocs", ORDER_KEY})
_META_KEYS: Final = ("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly")


class OpenAPIError(FalError, ValueError):
    """fal's OpenAPI document for a model lacks what we need (no submit path, no input schema)."""


@dataclass
class ResolvedSchemas:
    """What :func:`resolve_openapi` extracts from one model's OpenAPI document."""

    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    file_fields: list[str] = field(default_factory=list)
    example_input: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # ``info.x-fal-metadata`` (endpointId, category, …)


# -- OpenAPI document → schemas -------------------------------------------------------------------


def resolve_openapi(doc: Mapping[str, Any], endpoint_id: str) -> ResolvedSchemas:
    """Input schema = the submit path's request body; output schema = the result path's 200 body."""
    paths = doc.get("paths")
    if not isinstance(paths, Mapping) or not paths:
        raise OpenAPIError(f"fal's OpenAPI document for {endpoint_id!r} has no paths")
    submit = _operation(paths, f"/{endpoint_id}", "post") or _first_operation(
        paths, "post", lambda p: "/requests/" not in p
    )
    if submit is None:
        raise OpenAPIError(f"fal's OpenAPI document for {endpoint_id!r} has no submit (POST) path")
    raw_input = _json_body(submit.get("requestBody"))
    if raw_input is None:
        raise OpenAPIError(f"fal's OpenAPI document for {endpoint_id!r} has no JSON request body")
    result = _operation(paths, f"/{endpoint_id}/requests/{{request_id}}", "get") or _first_operation(
        paths, "get", lambda p: p.endswith("/requests/{request_id}")
    )
    raw_output = None
    if result is not None:
        responses = result.get("responses") or {}
        raw_output = _json_body(responses.get("200") or responses.get(200))
    input_schema = to_json_schema(raw_input, doc)
    output_schema = to_json_schema(raw_output, doc) if raw_output is not None else {"type": "object"}
    info = doc.get("info")
    metadata = info.get("x-fal-metadata") if isinstance(info, Mapping) else None
    return ResolvedSchemas(
        input_schema=input_schema,
        output_schema=output_schema,
        file_fields=find_file_fields(input_schema),
        example_input=build_example(input_schema),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
    )


def _operation(paths: Mapping[str, Any], path: str, method: str) -> Mapping[str, Any] | None:
    item = paths.get(path) or paths.get(path + "/")
    operation = item.get(method) if isinstance(item, Mapping) else None
    return operation if isinstance(operation, Mapping) else None


def _first_operation(paths: Mapping[str, Any], method: str, accept: Any) -> Mapping[str, Any] | None:
    for path, item in paths.items():
        if accept(str(path)) and isinstance(item, Mapping) and isinstance(item.get(method), Mapping):
            return item[method]
    return None


def _json_body(container: Any) -> Any:
    """The schema of a requestBody/response: its ``application/json`` content (or any ``*json`` one)."""
    if not isinstance(container, Mapping):
        return None
    content = container.get("content")
    if not isinstance(content, Mapping):
        return None
    media = content.get("application/json")
    if media is None:
        media = next((v for k, v in content.items() if "json" in str(k)), None)
    return media.get("schema") if isinstance(media, Mapping) else None


# -- OpenAPI schema → JSON Schema -----------------------------------------------------------------


def to_json_schema(schema: Any, root: Mapping[str, Any], *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Inline ``$ref``s (cycle-safe), flatten one-element ``allOf``, turn ``nullable`` into types, order properties.

    A reference back into a schema that is still being expanded (a cycle), or nesting deeper than
    ``max_depth``, becomes an open schema (``{}`` plus a description) instead of recursing forever.
    """
    result = _Resolver(root, max_depth).resolve(schema, (), 0)
    return result if isinstance(result, dict) else {}


class _Resolver:
    def __init__(self, root: Mapping[str, Any], max_depth: int) -> None:
        self.root = root
        self.max_depth = max_depth

    def resolve(self, node: Any, stack: tuple[str, ...], depth: int) -> Any:
        if isinstance(node, list):
            return [self.resolve(item, stack, depth + 1) for item in node]
        if not isinstance(node, Mapping):
            return copy.deepcopy(node)
        if depth > self.max_depth:
            return {"description": "(schema nested too deeply; not expanded)"}
        if "$ref" in node:
            return self._resolve_ref(node, stack, depth)
        return _normalize(self._resolve_keys(node, stack, depth))

    def _resolve_keys(self, node: Mapping[str, Any], stack: tuple[str, ...], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS:
                continue
            if key == "properties" and isinstance(value, Mapping):
                props = {name: self.resolve(sub, stack, depth + 1) for name, sub in value.items()}
                out[key] = _ordered(props, node.get(ORDER_KEY))
            elif key in ("items", "additionalProperties", "not", "contains", "propertyNames") and isinstance(
                value, Mapping
            ):
                out[key] = self.resolve(value, stack, depth + 1)
            elif key in ("allOf", "anyOf", "oneOf", "prefixItems") and isinstance(value, list):
                out[key] = [self.resolve(sub, stack, depth + 1) for sub in value]
            elif key == "example":
                out.setdefault("examples", [copy.deepcopy(value)])
            elif key == "examples" and not isinstance(value, list):
                out[key] = [copy.deepcopy(value)]  # OpenAPI's map-of-examples form
            else:
                out[key] = copy.deepcopy(value)
        return out

    def _resolve_ref(self, node: Mapping[str, Any], stack: tuple[str, ...], depth: int) -> dict[str, Any]:
        ref = str(node["$ref"])
        name = ref.rsplit("/", 1)[-1]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if ref in stack:
            target: dict[str, Any] = {"title": name, "description": f"(recursive reference to {name}; not expanded)"}
        else:
            raw = self._lookup(ref)
            if raw is None:
                target = {"description": f"(unresolvable reference {ref})"}
            else:
                resolved = self.resolve(raw, (*stack, ref), depth + 1)
                target = resolved if isinstance(resolved, dict) else {}
        if not siblings:
            return target
        # Keywords next to a $ref (description, default, nullable…) refine the referenced schema.
        return _normalize({**target, **self._resolve_keys(siblings, stack, depth)})

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node: Any = self.root
        for part in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node


def _ordered(props: dict[str, Any], order: Any) -> dict[str, Any]:
    """fal's ``x-fal-order-properties`` first (unknown names skipped), then the rest in document order."""
    if not isinstance(order, list):
        return props
    first = [name for name in order if isinstance(name, str) and name in props]
    listed = set(first)
    return {name: props[name] for name in [*first, *(n for n in props if n not in listed)]}


def _normalize(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 idioms → JSON Schema: one-element ``allOf``, ``nullable``, boolean exclusive bounds."""
    while isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1 and isinstance(node["allOf"][0], dict):
        inner = node["allOf"][0]
        rest = {k: v for k, v in node.items() if k != "allOf"}
        node = {**inner, **rest}  # the wrapper's own title/description/default are the more specific ones
    for bound, strict in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(strict) is True and bound in node:
            node[strict] = node.pop(bound)
        elif node.get(strict) is False:
            del node[strict]
    if "nullable" in node:
        nullable = node.pop("nullable") is True
        if nullable:
            node = _make_nullable(node)
    return node


def _make_nullable(node: dict[str, Any]) -> dict[str, Any]:
    kind = node.get("type")
    if isinstance(kind, str):
        node["type"] = [kind, "null"] if kind != "null" else "null"
    elif isinstance(kind, list):
        if "null" not in kind:
            node["type"] = [*kind, "null"]
    elif isinstance(node.get("anyOf"), list):
        if not any(_is_null_schema(s) for s in node["anyOf"]):
            node["anyOf"] = [*node["anyOf"], {"type": "null"}]
        return node
    else:
        meta = {k: node[k] for k in _META_KEYS if k in node}
        body = {k: v for k, v in node.items() if k not in meta}
        return {**meta, "anyOf": [body, {"type": "null"}]}  # type: ignore[dict-item]
    if isinstance(node.get("enum"), list) and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    return node


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, Mapping) and (schema.get("type") == "null" or schema.get("enum") == [None])


# -- file fields ----------------------------------------------------------------------------------

# Names ending in _url/_urls that point at a service, not at a file to hand to the model.
NOT_FILE_NAMES: Final = frozenset(
    {
        "webhook_url",
        "callback_url",
        "redirect_url",
        "base_url",
        "api_url",
        "api_base_url",
        "endpoint_url",
        "server_url",
        "proxy_url",
        "website_url",
        "homepage_url",
        "page_url",
        "site_url",
        "repo_url",
        "github_url",
    }
)
_FILE_FORMATS: Final = frozenset({"uri", "url", "iri", "uri-reference", "binary", "byte", "data-url"})
_MEDIA = (
    r"images?|photos?|pictures?|videos?|clips?|frames?|audios?|sounds?|speech|voices?|music|songs?|tracks?|"
    r"recordings?|files?|masks?|archives?|zips?|weights|loras?|checkpoints?|safetensors|embeddings?|"
    r"documents?|pdfs?|meshe?s?|textures?|subtitles?|srt|glb|obj|gif|png|jpe?g|webp|mp4|mp3|wav"
)
# "URL of the input image", "URL or the path to the LoRA weights", "URLs of reference images",
# "Image URL", "audio file URL", "URL where the file can be downloaded from".
_URL_OF_MEDIA = re.compile(
    rf"\bUR[LI]s?\b(?:\s+or\s+(?:the\s+|a\s+)?\w+)?\s+(?:of|to|for|pointing\s+to|where)\b[^.;]{{0,60}}?\b(?:{_MEDIA})\b",
    re.IGNORECASE,
)
_MEDIA_URL = re.compile(rf"\b(?:{_MEDIA})(?:\s+(?:file|input|data))?\s+UR[LI]s?\b", re.IGNORECASE)
_NOT_FILE_WORDS = re.compile(r"\b(?:webhook|callback|redirect)\b", re.IGNORECASE)


def find_file_fields(schema: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the input fields that take files (URLs, data URIs, or — via the MCP layer — local paths).

    ``a.b`` is property ``b`` of object ``a``; ``a[].b`` is property ``b`` of each item of array ``a``.
    A field counts when it takes a string (or a list of strings) and any of these hold:
    ``x-fal-file`` is set; fal's UI marks it (``ui: {"field": "image"}``, ``_fal_ui_field``); ``format`` is
    uri/binary/data-url…; ``contentMediaType`` is set; the name ends
    in ``_url``/``_urls`` (minus service URLs such as ``webhook_url``); or the title/description says it is
    the URL of an image, video, audio, file, mask, archive, weights…
    """
    found: list[str] = []
    _walk_files(schema, "", found, 0)
    return list(dict.fromkeys(found))


def _walk_files(schema: Any, prefix: str, found: list[str], depth: int) -> None:
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return
    for variant in _variants(schema):
        props = variant.get("properties")
        if isinstance(props, Mapping):
            for name, sub in props.items():
                path = f"{prefix}.{name}" if prefix else str(name)
                if isinstance(sub, Mapping) and _is_file_field(str(name), sub):
                    found.append(path)
                    continue
                _walk_files(sub, path, found, depth + 1)
        items = variant.get("items")
        if isinstance(items, Mapping) and prefix:
            _walk_files(items, f"{prefix}[]", found, depth + 1)


def _variants(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The schema itself and every alternative it allows (anyOf/oneOf/allOf members, recursively)."""
    yield schema
    for key in ("anyOf", "oneOf", "allOf"):
        members = schema.get(key)
        if isinstance(members, list):
            for member in members:
                if isinstance(member, Mapping):
                    yield from _variants(member)


def _string_leaves(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The string schemas a field accepts, directly or as array items (``None`` allowed alongside)."""
    leaves: list[Mapping[str, Any]] = []
    for variant in _variants(schema):
        kind = variant.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "string" in kinds:
            leaves.append(variant)
        if "array" in kinds and isinstance(variant.get("items"), Mapping):
            leaves.extend(v for v in _variants(variant["items"]) if v.get("type") == "string")
    return [leaf for leaf in leaves if "enum" not in leaf and "const" not in leaf]  # choices, not files


def _is_file_field(name: str, schema: Mapping[str, Any]) -> bool:
    leaves = _string_leaves(schema)
    if not leaves:
        return False
    marks = [schema, *leaves]
    explicit = [m["x-fal-file"] for m in marks if "x-fal-file" in m]
    if explicit:
        return bool(explicit[0])
    if any("contentMediaType" in m for m in marks) or any(_fal_ui_marker(m) for m in marks):
        return True
    texts = " ".join(str(m.get(k, "")) for m in marks for k in ("title", "description"))
    if name.lower() in NOT_FILE_NAMES or _NOT_FILE_WORDS.search(texts):
        return False
    if any(str(m.get("format", "")).lower() in _FILE_FORMATS for m in marks):
        return True
    lowered = name.lower()
    if lowered.endswith(("_url", "_urls")):
        return True
    return bool(_URL_OF_MEDIA.search(texts) or _MEDIA_URL.search(texts))


# fal's own UI markers for file inputs: ``ui: {"field": "image"}`` and ``_fal_ui_field: "audio"``.
_UI_FILE_KINDS: Final = re.compile(rf"^(?:{_MEDIA}|3d|model|upload|url)$", re.IGNORECASE)


def _fal_ui_marker(schema: Mapping[str, Any]) -> bool:
    """Whether fal's UI marks this schema as a file upload (the marker names a media kind)."""
    ui = schema.get("ui")
    kinds = [schema.get("_fal_ui_field"), ui.get("field") if isinstance(ui, Mapping) else None]
    return any(isinstance(kind, str) and _UI_FILE_KINDS.match(kind.strip()) for kind in kinds)


def find_file_values(data: Any, file_fields: list[str]) -> list[tuple[Location, str]]:
    """Every string value ``data`` holds at the ``file_fields`` paths, with its exact location.

    A location is a key/index tuple usable with :func:`replace_values` (e.g. ``("loras", 0, "path")``),
    so the MCP layer can upload local files and put the resulting URLs back.
    """
    found: list[tuple[Location, str]] = []
    for field_path in file_fields:
        steps = [s for s in re.split(r"\.|(\[\])", field_path) if s]
        _collect(data, steps, (), found)
    return found


def _collect(value: Any, steps: list[str], at: Location, out: list[tuple[Location, str]]) -> None:
    if not steps:
        if isinstance(value, str):
            out.append((at, value))
        elif isinstance(value, list):
            out.extend(((*at, i), item) for i, item in enumerate(value) if isinstance(item, str))
        return
    step, rest = steps[0], steps[1:]
    if step == "[]":
        if isinstance(value, list):
            for i, item in enumerate(value):
                _collect(item, rest, (*at, i), out)
    elif isinstance(value, Mapping) and step in value:
        _collect(value[step], rest, (*at, step), out)


def replace_values(data: Any, replacements: Mapping[Location, Any]) -> Any:
    """A deep copy of ``data`` with the value at each location replaced."""
    result = copy.deepcopy(data)
    for location, new in replacements.items():
        if not location:
            result = new
            continue
        parent = result
        for step in location[:-1]:
            parent = parent[step]
        parent[location[-1]] = new
    return result


# -- validation -----------------------------------------------------------------------------------


def accept_null_for_optional(schema: Any, depth: int = 0) -> Any:
    """A copy of ``schema`` in which every non-required property also accepts ``null``, at every level.

    fal's documents are generated from pydantic models, and pydantic-v1 style optional fields are typed
    without a null option (``seed: {"type": "integer"}``) although fal accepts ``null`` for them ("not
    given"); its own page example for ``fal-ai/playai/tts/v3`` sends ``"seed": null``.
    """
    if isinstance(schema, list):
        return [accept_null_for_optional(item, depth + 1) for item in schema]
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH * 4:
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            required = set(schema.get("required") or ())
            out[key] = {
                name: accept_null_for_optional(sub, depth + 1)
                if name in required
                else _accepting_null(accept_null_for_optional(sub, depth + 1))
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems", "not"):
            out[key] = accept_null_for_optional(value, depth + 1)
        else:
            out[key] = value
    return out


def _accepting_null(schema: Any) -> Any:
    if not isinstance(schema, Mapping) or _accepts_null(schema):
        return schema
    plain_keys = {"type", "enum", *_META_KEYS, "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    plain_keys |= {"minLength", "maxLength", "pattern", "format", "minItems", "maxItems", "items", "properties"}
    plain_keys |= {"required", "additionalProperties", "multipleOf", "uniqueItems", "contentMediaType"}
    if isinstance(schema.get("type"), (str, list)) and set(schema) <= plain_keys:
        return _make_nullable(dict(schema))  # keeps precise errors ("not one of …") for wrong values
    meta = {k: schema[k] for k in _META_KEYS if k in schema}
    body = {k: v for k, v in schema.items() if k not in meta}
    return {**meta, "anyOf": [body, {"type": "null"}]}


def _accepts_null(schema: Mapping[str, Any]) -> bool:
    if schema == {} or _is_null_schema(schema):
        return True
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return "enum" not in schema or None in schema["enum"]
    members = schema.get("anyOf") or schema.get("oneOf")
    return isinstance(members, list) and any(isinstance(m, Mapping) and _accepts_null(m) for m in members)


def is_valid(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` passes ``schema`` as our pre-submit check judges it (optional fields may be null)."""
    import jsonschema

    try:
        validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return bool(validator_cls(accept_null_for_optional(schema)).is_valid(value))
    except jsonschema.exceptions.SchemaError:
        return True  # a broken schema cannot refuse anything


# -- example input --------------------------------------------------------------------------------


def build_example(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An input that shows how to call the model: every required field, plus optional fields fal gives
    an explicit example for. Each value is the first of fal's examples, the default, the ``const``, the
    enum's choices or a placeholder that passes the field's own schema, so the example passes our own
    validation (fal's examples sometimes disagree with their schema, e.g. an item's example on a list)."""
    value = _example_object(schema, 0)
    if not isinstance(value, dict):
        return {}
    obj = _object_variant(schema)
    required = set(obj.get("required") or []) if obj is not None else set()
    for name in reversed([n for n in value if n not in required]):
        if is_valid(value, schema):
            break
        del value[name]  # an optional example that breaks the whole (e.g. a cross-field rule) is left out
    return value


def _example_object(schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
    obj = _object_variant(schema)
    if obj is None:
        return {}
    required = set(obj.get("required") or [])
    result: dict[str, Any] = {}
    for name, sub in (obj.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        if name in required:
            result[name] = _example_value(str(name), sub, depth + 1)
        else:
            explicit = [c for c in _explicit_examples(sub) if is_valid(c, sub)]
            if explicit:
                result[name] = explicit[0]
    return result


def _explicit_examples(schema: Mapping[str, Any]) -> list[Any]:
    """fal's examples for this field, its own first, then those of its alternatives (not ``null``)."""
    found: list[Any] = []
    for variant in _variants(schema):
        if variant is not schema and _is_null_schema(variant):
            continue
        examples = variant.get("examples")
        if isinstance(examples, list):
            found.extend(copy.deepcopy(e) for e in examples)
        if "example" in variant:
            found.append(copy.deepcopy(variant["example"]))
    return found


def _object_variant(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for variant in _variants(schema):
        if isinstance(variant.get("properties"), Mapping):
            return variant
    return None


def _example_value(name: str, schema: Mapping[str, Any], depth: int) -> Any:
    candidates = _explicit_examples(schema)
    if "default" in schema and schema["default"] is not None:
        candidates.append(copy.deepcopy(schema["default"]))
    for variant in _variants(schema):
        if "const" in variant and variant["const"] is not None:
            candidates.append(copy.deepcopy(variant["const"]))
        if isinstance(variant.get("enum"), list):
            candidates.extend(copy.deepcopy(e) for e in variant["enum"] if e is not None)
    if any(v.get("type") == "array" or "items" in v for v in _variants(schema)):
        candidates += [[c] for c in candidates if not isinstance(c, list)]  # an item's example on a list field
    for candidate in candidates:
        if is_valid(candidate, schema):
            return candidate
    generated = _generated_value(name, schema, depth)
    if not is_valid(generated, schema) and candidates:
        return candidates[0]  # nothing fits: fal's own example is the most telling placeholder
    return generated


def _generated_value(name: str, schema: Mapping[str, Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        return None
    kinds: list[Any] = []
    for variant in _variants(schema):
        kind = variant.get("type")
        kinds.extend(kind if isinstance(kind, list) else [kind])
    if "object" in kinds or _object_variant(schema) is not None:
        return _example_object(schema, depth)
    if "array" in kinds:
        array = next((v for v in _variants(schema) if isinstance(v.get("items"), Mapping)), schema)
        items = array.get("items")
        count = int(array.get("minItems") or 1)
        return [_example_value(name, items, depth + 1) for _ in range(count)] if isinstance(items, Mapping) else []
    if "integer" in kinds or "number" in kinds:
        number_schema = next((v for v in _variants(schema) if v.get("type") in ("integer", "number")), schema)
        low, strict = number_schema.get("minimum"), number_schema.get("exclusiveMinimum")
        number = low if isinstance(low, (int, float)) else (strict + 1 if isinstance(strict, (int, float)) else 0)
        high = number_schema.get("maximum")
        if isinstance(high, (int, float)) and number > high:
            number = high
        return int(number) if "integer" in kinds else number
    if "boolean" in kinds:
        return False
    if _is_file_field(name, schema):
        return f"<{name}: URL, data URI or local file path>"
    return f"<{name}>"
