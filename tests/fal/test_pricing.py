"""Billing units per call for fal's real unit strings, counted on fal's real documents with their defaults."""

from __future__ import annotations

from typing import Any

import pytest

from fal_mcp.fal.pricing import Unit, billing_quantity, parse_unit
from fal_mcp.fal.schemas import resolve_openapi
from tests.realdata import openapi_doc, real_prices


def schema_of(endpoint_id: str) -> dict[str, Any]:
    return resolve_openapi(openapi_doc(endpoint_id), endpoint_id).input_schema


def test_every_real_unit_string_parses() -> None:
    units = {price["unit"] for price in real_prices().values()}
    assert units >= {"megapixels", "images", "seconds", "videos", "compute seconds", "1000 characters", "minutes"}
    parsed = {unit: parse_unit(unit) for unit in units}
    assert all(parsed.values()), parsed
    assert parsed["1000 characters"] == Unit(base="character", per=1000, raw="1000 characters")
    assert parsed["compute seconds"].base == "compute second"
    # The spellings our emulator used to invent mean the same thing.
    assert parse_unit("1k_characters") == Unit(base="character", per=1000, raw="1k_characters")
    assert parse_unit("megapixel").base == parse_unit("megapixels").base == "megapixel"


def test_megapixels_use_the_schema_defaults_and_round_up_per_image() -> None:
    schema = schema_of("fal-ai/flux/dev")  # image_size default landscape_4_3 (1024x768), num_images default 1
    default = billing_quantity("megapixels", {"prompt": "x"}, schema)
    assert default is not None and default.units == 1 and "1024x768" in default.basis
    big = billing_quantity(
        "megapixels", {"prompt": "x", "image_size": {"width": 2048, "height": 2048}, "num_images": 3}, schema
    )
    assert big is not None and big.units == 3 * 4  # 2048x2048 is 4 of fal's 1024x1024 megapixels, three times
    square = billing_quantity("megapixels", {"prompt": "x", "image_size": "square_hd", "num_images": None}, schema)
    assert square.units == 1  # null means "not given": the default count
    wide = billing_quantity("megapixels", {"prompt": "x", "image_size": {"width": 1920, "height": 1088}}, schema)
    assert wide.units == 2  # 1.99 MP rounds up


def test_images_and_videos_count_outputs() -> None:
    schema = schema_of("fal-ai/nano-banana/edit")
    assert billing_quantity("images", {"prompt": "x", "image_urls": ["u"]}, schema).units == 1
    assert billing_quantity("images", {"prompt": "x", "image_urls": ["u"], "num_images": 4}, schema).units == 4
    video = schema_of("fal-ai/minimax/hailuo-02/pro/image-to-video")
    assert billing_quantity("videos", {"prompt": "x", "image_url": "u"}, video).units == 1


@pytest.mark.parametrize(
    ("endpoint_id", "data", "seconds"),
    [
        ("fal-ai/veo3", {"prompt": "x"}, 8),  # duration default "8s"
        ("fal-ai/veo3", {"prompt": "x", "duration": "4s"}, 4),
        ("fal-ai/kling-video/v2.1/pro/image-to-video", {"prompt": "x", "image_url": "u"}, 5),  # default "5"
        ("fal-ai/kling-video/v2.1/pro/image-to-video", {"prompt": "x", "image_url": "u", "duration": "10"}, 10),
        ("fal-ai/stable-audio", {"prompt": "x"}, 30),  # seconds_total default 30
        ("fal-ai/ltx-video-13b-distilled", {"prompt": "x"}, 121 / 24),  # num_frames / frame_rate defaults
    ],
)
def test_seconds_and_minutes_come_from_the_input_or_the_schema_defaults(
    endpoint_id: str, data: dict[str, Any], seconds: float
) -> None:
    schema = schema_of(endpoint_id)
    assert billing_quantity("seconds", data, schema).units == pytest.approx(seconds)
    assert billing_quantity("minutes", data, schema).units == pytest.approx(seconds / 60)


def test_characters_count_the_free_text_only() -> None:
    schema = schema_of("fal-ai/elevenlabs/tts/multilingual-v2")
    text = "Hello! " * 300
    quantity = billing_quantity("1000 characters", {"text": text, "voice": "Aria"}, schema)
    assert quantity is not None and quantity.units == pytest.approx((len(text) + len("Aria")) / 1000)
    # An enum choice is not billed text.
    choice = billing_quantity("1000 characters", {"text": "hi", "apply_text_normalization": "auto"}, schema)
    assert choice.units == pytest.approx(2 / 1000)


@pytest.mark.parametrize(
    ("unit", "endpoint_id", "data"),
    [
        ("compute seconds", "fal-ai/flux/dev", {"prompt": "x"}),  # only the run tells
        ("minutes", "fal-ai/elevenlabs/speech-to-text/scribe-v2", {"audio_url": "u"}),  # the audio's length
        ("megapixels", "fal-ai/nano-banana/edit", {"prompt": "x", "image_urls": ["u"]}),  # the output size
        ("seconds", "fal-ai/minimax/hailuo-02/pro/image-to-video", {"prompt": "x", "image_url": "u"}),
        ("1k_tokens", "fal-ai/flux/dev", {"prompt": "x"}),
        ("", "fal-ai/flux/dev", {"prompt": "x"}),
    ],
)
def test_units_the_input_cannot_tell_are_unknown_not_guessed(unit: str, endpoint_id: str, data: dict) -> None:
    assert billing_quantity(unit, data, schema_of(endpoint_id)) is None
