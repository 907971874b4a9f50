"""The schema pipeline against fal's real per-model documents (shared/data/fal-openapi), not our picture of them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fal_mcp.fal.schemas import build_example, find_file_fields, resolve_openapi
from fal_mcp.inputs import validate_input
from fal_mcp.server.errors import ToolFailure
from tests.realdata import all_endpoint_ids, openapi_doc

ENDPOINTS = all_endpoint_ids()


def resolved(endpoint_id: str) -> Any:
    return resolve_openapi(openapi_doc(endpoint_id), endpoint_id)


def input_component(doc: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    ref = doc["paths"][f"/{endpoint_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]


@pytest.mark.parametrize("endpoint_id", ENDPOINTS)
def test_null_for_every_optional_field_passes_and_the_suggested_example_too(endpoint_id: str) -> None:
    schema = resolved(endpoint_id)
    validate_input(schema.example_input, schema.input_schema)
    required = set(schema.input_schema.get("required") or [])
    with_nulls = {**schema.example_input, **{name: None for name in schema.input_schema["properties"]}}
    for name in required:
        with_nulls[name] = schema.example_input[name]
    validate_input(with_nulls, schema.input_schema)


def test_fals_own_null_seed_passes_where_seed_is_typed_without_null() -> None:
    # fal-ai/bagel/understand types seed as {"type": "integer"} (pydantic-v1 style); fal takes null there.
    schema = resolved("fal-ai/bagel/understand")
    assert schema.input_schema["properties"]["seed"]["type"] == "integer"
    validate_input({**schema.example_input, "seed": None}, schema.input_schema)
    with pytest.raises(ToolFailure) as refused:  # a wrong type is still refused, with the rule named
        validate_input({**schema.example_input, "seed": "seven"}, schema.input_schema)
    assert refused.value.details["fields"][0]["field"] == "seed"


def test_null_for_a_required_field_is_still_refused() -> None:
    schema = resolved("fal-ai/flux/dev")
    with pytest.raises(ToolFailure) as refused:
        validate_input({**schema.example_input, "prompt": None}, schema.input_schema)
    assert refused.value.details["fields"][0]["field"] == "prompt"


def test_null_inside_nested_objects_follows_their_own_required_list() -> None:
    schema = resolved("fal-ai/flux-lora")
    loras = schema.input_schema["properties"]["loras"]
    item = loras["items"]
    assert "path" in item["required"] and "scale" not in item["required"]
    validate_input({"prompt": "x", "loras": [{"path": "https://x/w.safetensors", "scale": None}]}, schema.input_schema)
    with pytest.raises(ToolFailure):
        validate_input({"prompt": "x", "loras": [{"path": None}]}, schema.input_schema)


def _broken_examples(doc: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    """The same document with the example mistakes fal's corpus has: an item's example on a list field,
    a ``const`` field with an example that contradicts it, and an example outside its enum."""
    doc = copy.deepcopy(doc)
    component = input_component(doc, endpoint_id)
    props = component["properties"]
    props["urls_item_example"] = {"type": "array", "items": {"type": "string"}, "examples": ["https://x/a.png"]}
    props["kind"] = {"type": "string", "const": "edit", "examples": ["generate"]}
    props["mode"] = {"type": "string", "enum": ["fast", "slow"], "examples": ["turbo"]}
    component.setdefault("required", []).extend(["urls_item_example", "kind", "mode"])
    props["optional_bad"] = {"type": "integer", "examples": ["twelve"]}
    return doc


@pytest.mark.parametrize("endpoint_id", ["fal-ai/flux/dev", "fal-ai/nano-banana/edit", "fal-ai/veo3"])
def test_suggested_example_passes_our_validation_even_when_fals_examples_contradict_the_schema(
    endpoint_id: str,
) -> None:
    schema = resolve_openapi(_broken_examples(openapi_doc(endpoint_id), endpoint_id), endpoint_id)
    example = schema.example_input
    validate_input(example, schema.input_schema)
    assert example["urls_item_example"] == ["https://x/a.png"]  # fal's item example, as a list
    assert example["kind"] == "edit"  # const honoured
    assert example["mode"] == "fast"
    assert "optional_bad" not in example


def test_example_inside_an_object_honours_const_and_required() -> None:
    schema = {
        "type": "object",
        "required": ["shape"],
        "properties": {
            "shape": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["type", "radius"],
                        "properties": {"type": {"const": "circle"}, "radius": {"type": "number", "minimum": 1}},
                    },
                    {"type": "null"},
                ]
            }
        },
    }
    example = build_example(schema)
    assert example == {"shape": {"type": "circle", "radius": 1}}
    validate_input(example, schema)


def _strip_names(doc: dict[str, Any], endpoint_id: str, field: str, new_name: str) -> dict[str, Any]:
    """Rename a field and drop its title/description/examples: only fal's UI marker is left to tell."""
    doc = copy.deepcopy(doc)
    component = input_component(doc, endpoint_id)
    sub = component["properties"].pop(field)
    for key in ("title", "description", "examples"):
        sub.pop(key, None)
    component["properties"][new_name] = sub
    component["required"] = [new_name if r == field else r for r in component.get("required", [])]
    order = component.get("x-fal-order-properties")
    if order:
        component["x-fal-order-properties"] = [new_name if o == field else o for o in order]
    return doc


@pytest.mark.parametrize(
    ("endpoint_id", "field"),
    [
        ("fal-ai/recraft/upscale/creative", "image_url"),  # _fal_ui_field: "image"
        ("fal-ai/personaplex", "voice_audio_url"),  # anyOf member with ui: {"field": "audio"}
        ("fal-ai/kling-video/v2.1/pro/image-to-video", "tail_image_url"),  # ui: {"field": "image"}
        ("fal-ai/workflow-utilities/interleave-video", "video_urls"),  # items with _fal_ui_field: "video"
    ],
)
def test_file_fields_are_found_by_fals_markers_not_only_by_name(endpoint_id: str, field: str) -> None:
    assert field in resolved(endpoint_id).file_fields
    renamed = resolve_openapi(_strip_names(openapi_doc(endpoint_id), endpoint_id, field, "source"), endpoint_id)
    assert "source" in renamed.file_fields
    assert not any(f.startswith("source") for f in find_file_fields({"properties": {"source": {"type": "string"}}}))
