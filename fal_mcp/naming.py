"""Predictable names for saved output files, from a template such as ``{endpoint}-{request_id}-{index}.{ext}``.

Every field value is untrusted (a model's endpoint id, fal's request id, the file name fal chose) and is
reduced to ``[A-Za-z0-9._-]`` before it reaches the file system; the template itself is checked once,
before any money is spent, so a bad one is refused with a message saying what is allowed.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime

DEFAULT_TEMPLATE = "{endpoint}-{request_id}-{index}.{ext}"
FIELDS = {
    "endpoint": "the model id, slashes as '_' (fal-ai_flux_dev)",
    "request_id": "fal's request id",
    "index": "the file's position in the output, from 0",
    "ext": "the file's real extension, from its content (png, jpg, mp4, …)",
    "seed": "the seed, when the model reports one",
    "date": "UTC date, YYYYMMDD",
    "time": "UTC time, HHMMSS",
    "name": "the file name fal gave it, without extension",
}
MAX_TEMPLATE_CHARS = 200
MAX_FIELD_CHARS = 80
_UNSAFE_FIELD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_LITERAL_CHARS = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')


class TemplateError(ValueError):
    """A file name template we cannot use; the message says what is allowed."""


@dataclass(frozen=True)
class NameTemplate:
    """A checked template; :meth:`render` gives a file name (still to be de-duplicated by the writer)."""

    text: str

    @classmethod
    def parse(cls, text: str) -> NameTemplate:
        allowed = ", ".join(f"{{{name}}}" for name in FIELDS)
        if not text or not text.strip():
            raise TemplateError(f"the file name template is empty; use fields such as {DEFAULT_TEMPLATE}")
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the file name template is longer than {MAX_TEMPLATE_CHARS} characters")
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(
                f"the file name template {text!r} is malformed ({exc}); write fields as {{name}} "
                "and a literal brace as {{ or }}"
            ) from None
        for literal, field, spec, conversion in parts:
            if _UNSAFE_LITERAL_CHARS.search(literal):
                raise TemplateError(
                    f"the file name template {text!r} contains a path separator or a character file names "
                    "cannot hold; it names one file inside download_dir (choose the folder with download_dir)"
                )
            if field is None:
                continue
            if field not in FIELDS:
                raise TemplateError(f"the file name template uses {{{field}}}; the fields are {allowed}")
            if spec or conversion:
                raise TemplateError(
                    f"the file name template field {{{field}}} has a format spec or conversion; "
                    f"write plain fields ({allowed})"
                )
        return cls(text)

    @property
    def has_ext(self) -> bool:
        return any(field == "ext" for _, field, _, _ in string.Formatter().parse(self.text))

    def render(
        self,
        *,
        endpoint: str,
        request_id: str | None,
        index: int,
        ext: str,
        seed: object = None,
        name: str | None = None,
        when: datetime,
    ) -> str:
        values = {
            "endpoint": field_value(endpoint.replace("/", "_")),
            "request_id": field_value(request_id or "norequest"),
            "index": str(index),
            "ext": field_value(ext) or "bin",
            "seed": field_value(str(seed)) if seed is not None and not isinstance(seed, bool) else "noseed",
            "date": when.strftime("%Y%m%d"),
            "time": when.strftime("%H%M%S"),
            "name": field_value(_stem(name or "")) or "output",
        }
        rendered = self.text.format(**values)
        if not self.has_ext:
            rendered = f"{rendered}.{values['ext']}"
        return rendered


def _stem(file_name: str) -> str:
    leaf = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    return leaf.rsplit(".", 1)[0] if "." in leaf.lstrip(".") else leaf


def field_value(value: str) -> str:
    """One field's value made safe for a file name: ASCII letters, digits, ``.``, ``_``, ``-``; bounded."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE_FIELD_CHARS.sub("_", ascii_only).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned[:MAX_FIELD_CHARS].rstrip("._-")
