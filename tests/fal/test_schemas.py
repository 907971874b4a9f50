"""OpenAPI → JSON Schema resolution, file-field detection and example inputs (pure functions, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from fal_mcp.fal.schemas import (
    OpenAPIError,
    build_example,
    find_file_fields,
    find_file_values,
    replace_values,
    resolve_openapi,
    to_json_schema,
)

ENDPOINT = "fal-ai/demo/edit"


def openapi(input_name: str, schemas: dict[str, Any], output: dict[str, Any] | None = None) -> dict[str, Any]:
    """A document laid out like fal's per-model queue OpenAPI."""
    requests = f"/{ENDPOINT}/requests/{{request_id}}"
    return {
        "openapi": "3.0.4",
        "info": {"title": f"Queue OpenAPI for {ENDPOINT}", "x-fal-metadata": {"endpointId": ENDPOINT, "category": "x"}},
        "components": {"schemas": {"QueueStatus": {"type": "object"}, **schemas}},
        "paths": {
            f"{requests}/status": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {}}}}}}},
            f"/{ENDPOINT}": {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{input_name}"}}}
                    }
                }
            },
            requests: {
                "get": {
                    "responses": {"200": {"content": {"application/json": {"schema": output or {"type": "object"}}}}}
                }
            },
        },
    }


def refs_in(node: Any) -> list[str]:
    text = json.dumps(node)
    return [part for part in text.split('"') if part == "$ref"]


# -- resolution ---------------------------------------------------------------------------------

SYNTHETIC = {
    "DemoInput": {
        "title": "DemoInput",
        "type": "object",
        "x-fal-order-properties": ["prompt", "image", "style", "ghost"],
        "required": ["prompt", "image"],
        "properties": {
            "tree": {"$ref": "#/components/schemas/TreeNode"},
            "style": {"allOf": [{"$ref": "#/components/schemas/Style"}], "description": "Which style.", "default": "a"},
            "image": {"$ref": "#/components/schemas/ImageRef"},
            "prompt": {"type": "string", "example": "a lighthouse"},
            "seed": {"type": "integer", "nullable": True},
            "mode": {"type": "string", "enum": ["fast", "slow"], "nullable": True},
            "size": {"$ref": "#/components/schemas/Size", "nullable": True, "description": "Output size."},
            "strength": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "mixed": {"allOf": [{"$ref": "#/components/schemas/Size"}, {"required": ["width"]}]},
            "missing": {"$ref": "#/components/schemas/DoesNotExist"},
            "remote": {"$ref": "https://example.com/schema.json#/Foo"},
            "pet": {"oneOf": [{"$ref": "#/components/schemas/Size"}], "discriminator": {"propertyName": "kind"}},
        },
    },
    "TreeNode": {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/TreeNode"}},
        },
    },
    "Style": {"type": "string", "enum": ["a", "b"], "description": "A style."},
    "ImageRef": {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"$ref": "#/components/schemas/Url"}, "weight": {"type": "number", "default": 1}},
    },
    "Url": {"type": "string", "description": "URL of the reference image.", "examples": ["https://x/y.png"]},
    "Size": {"type": "object", "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}},
}


@pytest.fixture(scope="module")
def resolved() -> Any:
    return resolve_openapi(openapi("DemoInput", SYNTHETIC), ENDPOINT)


def test_refs_are_inlined_and_result_is_valid_json_schema(resolved: Any) -> None:
    schema = resolved.input_schema
    assert refs_in(schema) == []
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["image"]["properties"]["url"]["description"] == "URL of the reference image."


def test_property_order_follows_x_fal_order_properties(resolved: Any) -> None:
    names = list(resolved.input_schema["properties"])
    assert names[:3] == ["prompt", "image", "style"]  # listed first ("ghost" is not a property: skipped)
    assert names[3:] == ["tree", "seed", "mode", "size", "strength", "mixed", "missing", "remote", "pet"]
    assert "x-fal-order-properties" not in json.dumps(resolved.input_schema)


def test_cycles_stop_at_the_first_repeat(resolved: Any) -> None:
    tree = resolved.input_schema["properties"]["tree"]
    child = tree["properties"]["children"]["items"]
    assert child["title"] == "TreeNode"
    assert "recursive" in child["description"]
    assert "properties" not in child


def test_single_allof_is_flattened_with_the_wrapper_winning(resolved: Any) -> None:
    style = resolved.input_schema["properties"]["style"]
    assert style == {"type": "string", "enum": ["a", "b"], "description": "Which style.", "default": "a"}


def test_multi_allof_is_kept(resolved: Any) -> None:
    mixed = resolved.input_schema["properties"]["mixed"]
    assert len(mixed["allOf"]) == 2
    assert mixed["allOf"][0]["properties"]["width"] == {"type": "integer"}


def test_nullable_becomes_json_schema_types(resolved: Any) -> None:
    props = resolved.input_schema["properties"]
    assert props["seed"]["type"] == ["integer", "null"]
    assert props["mode"]["type"] == ["string", "null"]
    assert props["mode"]["enum"] == ["fast", "slow", None]
    assert props["size"]["type"] == ["object", "null"]
    assert props["size"]["description"] == "Output size."
    validator = jsonschema.Draft202012Validator(resolved.input_schema)
    assert validator.is_valid({"prompt": "p", "image": {"url": "u"}, "seed": None, "mode": None, "size": None})
    assert not validator.is_valid({"prompt": "p", "image": {"url": "u"}, "mode": "medium"})


def test_openapi_only_keywords_are_translated(resolved: Any) -> None:
    props = resolved.input_schema["properties"]
    assert props["prompt"]["examples"] == ["a lighthouse"] and "example" not in props["prompt"]
    assert props["strength"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    assert "discriminator" not in props["pet"]
    assert "unresolvable" in props["missing"]["description"]
    assert "unresolvable" in props["remote"]["description"]


def test_metadata_and_output_schema() -> None:
    output = {"$ref": "#/components/schemas/DemoOutput"}
    schemas = {
        **SYNTHETIC,
        "DemoOutput": {
            "type": "object",
            "properties": {"images": {"type": "array", "items": {"$ref": "#/components/schemas/Size"}}},
        },
    }
    result = resolve_openapi(openapi("DemoInput", schemas, output), ENDPOINT)
    assert result.metadata["category"] == "x"
    assert result.output_schema["properties"]["images"]["items"]["properties"]["width"] == {"type": "integer"}


def test_depth_limit_bounds_deep_non_cyclic_nesting() -> None:
    schemas = {
        f"L{i}": {"type": "object", "properties": {"next": {"$ref": f"#/components/schemas/L{i + 1}"}}}
        for i in range(60)
    }
    schema = to_json_schema({"$ref": "#/components/schemas/L0"}, {"components": {"schemas": schemas}}, max_depth=10)
    depth, node = 0, schema
    while "properties" in node:
        node, depth = node["properties"]["next"], depth + 1
    assert depth < 10
    assert "too deeply" in node["description"]


def test_missing_submit_path_is_an_openapi_error() -> None:
    with pytest.raises(OpenAPIError, match="no paths"):
        resolve_openapi({"openapi": "3.0.4"}, ENDPOINT)
    doc = openapi("DemoInput", SYNTHETIC)
    del doc["paths"][f"/{ENDPOINT}"]
    with pytest.raises(OpenAPIError, match="submit"):
        resolve_openapi(doc, ENDPOINT)


# -- file fields --------------------------------------------------------------------------------

# Shapes and wording as fal publishes them (flux-lora, kling image-to-video, trainers, LLM routers…).
REALISTIC_INPUT = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "title": "Prompt", "description": "The prompt to generate an image from."},
        "image_url": {"type": "string", "title": "Image Url", "description": "The URL of the image to edit."},
        "tail_image_url": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "title": "Tail Image Url",
            "description": "URL of the image to be used for the end of the video",
        },
        "mask_url": {"type": "string", "format": "uri", "maxLength": 2083, "minLength": 1},
        "reference_image_urls": {"type": "array", "items": {"type": "string"}, "title": "Reference Image Urls"},
        "images_data_url": {"type": "string", "description": "URL to zip archive with images of a consistent style."},
        "loras": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "URL or the path to the LoRA weights."},
                    "scale": {"type": "number", "default": 1},
                },
            },
        },
        "ip_adapter": {
            "type": "object",
            "properties": {
                "ip_adapter_image_url": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "weight_name": {"type": "string", "description": "Name of the safetensors file in the repo."},
            },
        },
        "voice_sample": {"type": "string", "description": "Reference voice recording URL (wav or mp3)."},
        "start_frame": {"type": "string", "description": "The URL of the first frame of the video."},
        "reference": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The URL where the file can be downloaded from."}},
        },
        "document": {"type": "string", "x-fal-file": True},
        "attachment": {"type": "string", "contentMediaType": "application/pdf"},
        "raw_bytes": {"type": "string", "format": "binary"},
        # Not files:
        "webhook_url": {"type": "string", "format": "uri"},
        "status_callback": {"type": "string", "format": "uri", "description": "Webhook to notify."},
        "model_name": {
            "type": "string",
            "description": "URL or HuggingFace ID of the base model to generate the image.",
        },
        "sync_mode": {"type": "boolean", "description": "If true, the image is returned as a data URI."},
        "image_size": {
            "anyOf": [
                {"type": "object", "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}},
                {"type": "string", "enum": ["square_hd", "landscape_4_3"]},
            ],
            "description": "The size of the generated image.",
        },
        "output_format": {"type": "string", "enum": ["jpeg", "png"], "description": "Image format of the output URL."},
        "explicitly_not": {"type": "string", "description": "URL of the image.", "x-fal-file": False},
        "num_image_urls": {"type": "integer"},
        "negative_prompt": {"type": "string", "description": "What to avoid in the image."},
    },
}


def test_file_fields_on_realistic_schema() -> None:
    assert find_file_fields(REALISTIC_INPUT) == [
        "image_url",
        "tail_image_url",
        "mask_url",
        "reference_image_urls",
        "images_data_url",
        "loras[].path",
        "ip_adapter.ip_adapter_image_url",
        "voice_sample",
        "start_frame",
        "reference.url",
        "document",
        "attachment",
        "raw_bytes",
    ]


def test_file_fields_after_resolving_refs() -> None:
    schemas = {
        "EditInput": {
            "type": "object",
            "properties": {
                "image_url": {"type": "string", "description": "URL of the input image."},
                "loras": {"type": "array", "items": {"$ref": "#/components/schemas/LoraWeight"}},
                "control": {"allOf": [{"$ref": "#/components/schemas/Control"}], "nullable": True},
            },
        },
        "LoraWeight": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "URL or the path to the LoRA weights."}},
        },
        "Control": {"type": "object", "properties": {"control_image_url": {"type": "string"}}},
    }
    result = resolve_openapi(openapi("EditInput", schemas), ENDPOINT)
    assert result.file_fields == ["image_url", "loras[].path", "control.control_image_url"]


def test_find_and_replace_file_values() -> None:
    data = {
        "prompt": "keep me",
        "image_url": "./cat.png",
        "reference_image_urls": ["a.png", "https://x/b.png"],
        "loras": [{"path": "style.safetensors", "scale": 1}, {"path": "https://x/w.safetensors"}],
        "ip_adapter": {"ip_adapter_image_url": "face.jpg"},
    }
    fields = find_file_fields(REALISTIC_INPUT)
    found = find_file_values(data, fields)
    assert found == [
        (("image_url",), "./cat.png"),
        (("reference_image_urls", 0), "a.png"),
        (("reference_image_urls", 1), "https://x/b.png"),
        (("loras", 0, "path"), "style.safetensors"),
        (("loras", 1, "path"), "https://x/w.safetensors"),
        (("ip_adapter", "ip_adapter_image_url"), "face.jpg"),
    ]
    replaced = replace_values(data, {loc: f"https://cdn/{value}" for loc, value in found if "://" not in value})
    assert replaced["image_url"] == "https://cdn/./cat.png"
    assert replaced["reference_image_urls"] == ["https://cdn/a.png", "https://x/b.png"]
    assert replaced["loras"][0] == {"path": "https://cdn/style.safetensors", "scale": 1}
    assert data["image_url"] == "./cat.png"  # the original is untouched


# -- example input ------------------------------------------------------------------------------


def test_example_input_uses_examples_defaults_enums_and_placeholders() -> None:
    schema = {
        "type": "object",
        "required": ["prompt", "image_url", "mode", "steps", "size", "strength", "tags", "flag"],
        "properties": {
            "prompt": {"type": "string", "examples": ["a red fox"]},
            "image_url": {"type": "string"},
            "mode": {"type": ["string", "null"], "enum": ["fast", "slow", None]},
            "steps": {"type": "integer", "default": 28},
            "size": {
                "type": "object",
                "required": ["width"],
                "properties": {"width": {"type": "integer", "minimum": 64}, "height": {"type": "integer"}},
            },
            "strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "enum": ["x", "y"]}},
            "flag": {"type": "boolean"},
            "seed": {"type": "integer", "examples": [42]},
            "guidance": {"type": "number", "default": 3.5},
        },
    }
    example = build_example(schema)
    assert example == {
        "prompt": "a red fox",
        "image_url": "<image_url: URL, data URI or local file path>",
        "mode": "fast",
        "steps": 28,
        "size": {"width": 64},
        "strength": 1,
        "tags": ["x", "x"],
        "flag": False,
        "seed": 42,  # optional, but fal gave an example
    }
    assert jsonschema.Draft202012Validator(schema).is_valid(example)
