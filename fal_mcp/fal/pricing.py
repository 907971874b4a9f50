"""How many of a model's billing units one call uses, from its input and its schema's defaults (pure, no I/O).

fal prices each model per billing unit (``GET {platform}/models/pricing``): real unit strings include
``megapixels``, ``images``, ``seconds``, ``videos``, ``compute seconds``, ``1000 characters`` and
``minutes`` (shared/data/fal-platform). Units the input determines are counted here; the rest (compute
time, tokens, minutes of audio nobody has heard yet) cannot be known before the call, and
:func:`billing_quantity` says so instead of guessing, so a caller can ask fal's estimate API or refuse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fal_mcp.fal.schemas import IMAGE_SIZE_PRESETS, find_file_fields

# Names of the fields that say how many outputs one call makes.
COUNT_FIELDS: Final = ("num_images", "num_outputs", "num_videos", "num_samples", "batch_size", "n")
# Names of the fields that hold a duration in seconds ("8s", 5, "5.5").
DURATION_FIELDS: Final = re.compile(r"^(?:duration|\w+_duration|duration_\w+|seconds_total|total_seconds|seconds)$")
MEGAPIXEL: Final = 1024 * 1024
FPS_FIELDS: Final = ("frames_per_second", "frame_rate", "fps")
_MULTIPLIERS: Final = {"k": 1_000, "m": 1_000_000}
_UNIT_RE: Final = re.compile(r"^(?:(?P<number>\d+(?:\.\d+)?)\s*(?P<suffix>[km])?\b)?\s*(?P<base>.*)$")
_SYNONYMS: Final = {
    "megapixel": "megapixel",
    "mp": "megapixel",
    "image": "image",
    "picture": "image",
    "output": "output",
    "second": "second",
    "video second": "second",
    "audio second": "second",
    "sec": "second",
    "video": "video",
    "minute": "minute",
    "audio minute": "minute",
    "min": "minute",
    "character": "character",
    "char": "character",
    "request": "request",
    "call": "request",
    "run": "request",
    "generation": "request",
}


@dataclass(frozen=True)
class Unit:
    """A normalized billing unit: ``per`` of ``base`` (``1000 characters`` → per 1000, base ``character``)."""

    base: str
    per: float = 1.0
    raw: str = ""


@dataclass(frozen=True)
class Quantity:
    """How many billing units a call uses, and how that was worked out (for the user)."""

    units: float
    basis: str


def parse_unit(unit: str | None) -> Unit | None:
    """``"1000 characters"``, ``"1k_characters"``, ``"compute seconds"``, ``"megapixels"`` → :class:`Unit`."""
    if not unit or not unit.strip():
        return None
    text = re.sub(r"[\s_\-]+", " ", unit.strip().lower())
    match = _UNIT_RE.match(text)
    if match is None:
        return None
    per = float(match["number"]) if match["number"] else 1.0
    per *= _MULTIPLIERS.get(match["suffix"] or "", 1)
    words = match["base"].strip().removeprefix("per ").split()
    words = [w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words]  # seconds → second
    base = " ".join(words)
    return Unit(base=_SYNONYMS.get(base, base), per=per or 1.0, raw=unit)


def with_defaults(data: Mapping[str, Any], input_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input as fal will run it: the schema's defaults for omitted (or ``null``) top-level fields."""
    merged = dict(data)
    for name, sub in (input_schema.get("properties") or {}).items():
        if merged.get(name) is None and isinstance(sub, Mapping) and sub.get("default") is not None:
            merged[name] = sub["default"]
    return merged


def billing_quantity(unit: str | None, data: Mapping[str, Any], input_schema: Mapping[str, Any]) -> Quantity | None:
    """Billing units this input uses, or ``None`` when they cannot be known before the call."""
    parsed = parse_unit(unit)
    if parsed is None:
        return None
    values = with_defaults(data, input_schema)
    count = _output_count(values)
    units: float | None
    if parsed.base == "request":
        units, basis = 1.0, "1 call"
    elif parsed.base in ("image", "video", "output"):
        units, basis = float(count), f"{count} {parsed.base}(s)"
    elif parsed.base == "megapixel":
        size = _image_size(values)
        if size is None:
            return None
        # fal: "Images are billed by rounding up to the nearest megapixel", and quotes flux/dev's per-MP
        # price as the price of a 1024x1024 image: a megapixel is 1024x1024 pixels, counted per image.
        per_image = max(1, math.ceil(size[0] * size[1] / MEGAPIXEL))
        units, basis = float(count * per_image), f"{count} image(s) of {size[0]}x{size[1]} = {per_image} MP each"
    elif parsed.base in ("second", "minute"):
        seconds = _seconds(values)
        if seconds is None:
            return None
        units = seconds if parsed.base == "second" else seconds / 60
        units *= count if any(values.get(f) is not None for f in ("num_videos", "num_outputs")) else 1
        basis = f"{seconds:g} s of output"
    elif parsed.base == "character":
        chars = _characters(data, input_schema)
        if not chars:
            return None
        units, basis = float(chars), f"{chars} characters of text"
    else:  # compute seconds, tokens, …: only the run itself tells
        return None
    return Quantity(units=units / parsed.per, basis=basis)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _output_count(values: Mapping[str, Any]) -> int:
    for name in COUNT_FIELDS:
        count = _int(values.get(name))
        if count is not None and count >= 1:
            return count
    return 1


def _image_size(values: Mapping[str, Any]) -> tuple[int, int] | None:
    """The output size from ``image_size`` (fal's presets or ``{width, height}``) or ``width``/``height``."""
    size = values.get("image_size")
    if isinstance(size, Mapping):
        width, height = _int(size.get("width")), _int(size.get("height"))
        return (width, height) if width and height else None
    if isinstance(size, str) and size in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[size]
    width, height = _int(values.get("width")), _int(values.get("height"))
    return (width, height) if width and height else None


def _seconds(values: Mapping[str, Any]) -> float | None:
    for name, value in values.items():
        if DURATION_FIELDS.match(str(name)):
            seconds = _duration_value(value)
            if seconds is not None:
                return seconds
    frames = _int(values.get("num_frames"))
    fps = next((_int(values.get(f)) for f in FPS_FIELDS if _int(values.get(f))), None)
    if frames and fps:
        return frames / fps
    return None


def _duration_value(value: Any) -> float | None:
    """``8``, ``"8"``, ``"8s"``, ``"5.5 seconds"`` → seconds; anything else (``"auto"``) → None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value > 0 else None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)?\s*", value.lower())
        return float(match[1]) if match and float(match[1]) > 0 else None
    return None


def _characters(data: Mapping[str, Any], input_schema: Mapping[str, Any]) -> int:
    """Characters of free text in the input: strings (or lists of them) in fields that are neither
    choices (enum/const) nor files. Counts every such field, so it never undercounts the billed text."""
    props = input_schema.get("properties") or {}
    files = {f.split(".")[0].split("[")[0] for f in find_file_fields(input_schema)}
    total = 0
    for name, value in data.items():
        sub = props.get(name)
        if name in files or (isinstance(sub, Mapping) and _is_choice(sub)):
            continue
        strings = value if isinstance(value, list) else [value]
        total += sum(len(s) for s in strings if isinstance(s, str) and not s.startswith(("http://", "https://")))
    return total


def _is_choice(schema: Mapping[str, Any]) -> bool:
    if "enum" in schema or "const" in schema:
        return True
    members = schema.get("anyOf") or schema.get("oneOf") or []
    return any(isinstance(m, Mapping) and ("enum" in m or "const" in m) for m in members)
