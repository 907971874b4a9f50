"""The emulator's catalog: fal's real per-model OpenAPI documents, plus search metadata and prices.

Every fal queue OpenAPI document (``*.json`` or ``*.json.gz``) in the package's ``data/openapi/`` and in
the directories of ``EmulatorConfig.catalog_dirs`` (``FAL_EMULATOR_CATALOG_DIR``) is an endpoint: search
lists it, pricing prices it and ``/openapi`` serves the document verbatim. ``data/catalog.json`` adds the
metadata fal's search returns but the documents lack (display name, description, price, unit …); an
endpoint it does not mention gets metadata derived from its id and document, and no price.

Endpoints with a built-in model (``state.models``) run; every other one is listed with markers (the
``catalog-only`` tag, a display-name suffix and a description prefix) and refused at submit
(``run.not_runnable``).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fal_mcp.emulator.models.base import ModelInfo
from fal_mcp.log import get_logger

if TYPE_CHECKING:
    from fal_mcp.emulator.models import EmulatedModel
    from fal_mcp.emulator.state import EmulatorState

log = get_logger(__name__)

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_DATE = "2024-08-01T00:00:00Z"
RUNS_OFFLINE_TAG = "runs-offline"
CATALOG_ONLY_TAG = "catalog-only"
NOT_RUNNABLE_NOTE = "[Not runnable in the offline emulator: schema, price and metadata only.]"
NOT_RUNNABLE_NAME = "[not runnable offline]"  # model_schema shows the name, not the description
# fal's search categories for the coarse categories fal-js files documents under, when the id says no more.
_CATEGORY_BY_GROUP = {
    "image": "text-to-image",
    "video": "text-to-video",
    "audio": "text-to-audio",
    "speech": "text-to-speech",
    "text": "speech-to-text",
    "3d": "image-to-3d",
}
_CATEGORY_IN_ID = re.compile(
    r"(text-to-image|image-to-image|text-to-video|image-to-video|video-to-video|text-to-speech|speech-to-text|"
    r"text-to-audio|audio-to-audio|image-to-3d|edit|upscale|lipsync|training|trainer)"
)


class NotADocumentError(ValueError):
    """The JSON is not a fal queue OpenAPI document (no single submit path with input/output schemas)."""


def _ref_name(schema: Any) -> str | None:
    ref = schema.get("$ref") if isinstance(schema, Mapping) else None
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) and ref.startswith("#/components/schemas/") else None


@dataclass(frozen=True)
class Document:
    """One fal queue OpenAPI document and the input/output schemas it declares for its endpoint."""

    endpoint_id: str
    document: Mapping[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    components: dict[str, dict[str, Any]]

    @property
    def group(self) -> str:
        """The document's own ``x-fal-metadata.category`` (fal-js groups documents by it)."""
        return str(self.document.get("info", {}).get("x-fal-metadata", {}).get("category") or "")

    @classmethod
    def parse(cls, document: Any) -> Document:
        """Read the endpoint id (``x-fal-metadata.endpointId``, else the submit path) and its schemas."""
        if not isinstance(document, Mapping) or not isinstance(document.get("paths"), Mapping):
            raise NotADocumentError("no OpenAPI paths")
        paths: Mapping[str, Any] = document["paths"]
        submits = [path for path, item in paths.items() if isinstance(item, Mapping) and "post" in item]
        if len(submits) != 1:
            raise NotADocumentError(f"expected one submit (POST) path, found {len(submits)}")
        metadata = document.get("info", {}).get("x-fal-metadata", {})
        endpoint_id = str(metadata.get("endpointId") or submits[0]).strip("/")
        schemas = document.get("components", {}).get("schemas", {})
        body = paths[submits[0]]["post"].get("requestBody", {}).get("content", {}).get("application/json", {})
        input_name = _ref_name(body.get("schema"))
        result = paths.get(f"{submits[0]}/requests/{{request_id}}", {}).get("get", {})
        output = result.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
        output_name = _ref_name(output.get("schema"))
        if input_name not in schemas:
            raise NotADocumentError(f"input schema {input_name!r} not in components")
        return cls(
            endpoint_id=endpoint_id,
            document=document,
            input_schema=schemas[input_name],
            output_schema=schemas.get(output_name, {}) if output_name else {},
            components=dict(schemas),
        )


def _read(path: Path) -> Any:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.name.endswith(".gz") else raw)


def load_dir(directory: Path) -> dict[str, Document]:
    """Every fal queue document in ``directory`` by endpoint id; other JSON files are skipped (logged)."""
    found: dict[str, Document] = {}
    try:
        paths = sorted(directory.iterdir())
    except OSError as exc:
        log.warning("emulator catalog directory unreadable", path=str(directory), reason=str(exc))
        return found
    for path in paths:
        if not path.name.endswith((".json", ".json.gz")) or not path.is_file():
            continue
        try:
            document = Document.parse(_read(path))
        except (OSError, ValueError) as exc:
            log.info("emulator catalog skipped a file", path=str(path), reason=str(exc))
            continue
        found[document.endpoint_id] = document
    return found


@functools.cache
def vendored() -> dict[str, Document]:
    """The documents shipped with the package (fal's own, see ``data/SOURCES.md``)."""
    return load_dir(DATA_DIR / "openapi")


@functools.cache
def overlay() -> dict[str, dict[str, Any]]:
    """``data/catalog.json``: per endpoint id, the search metadata and price the emulator publishes."""
    return dict(json.loads((DATA_DIR / "catalog.json").read_text("utf-8"))["models"])


@functools.cache
def documents(extra_dirs: tuple[str, ...] = ()) -> dict[str, Document]:
    """Vendored documents, then those of ``extra_dirs`` (a later one replaces an earlier one's id); read once."""
    found = dict(vendored())
    for directory in extra_dirs:
        found.update(load_dir(Path(directory).expanduser()))
    return found


def display_name(endpoint_id: str) -> str:
    """``fal-ai/kling-video/v2.1/pro/image-to-video`` → ``Kling Video V2.1 Pro Image To Video``."""
    owner, _, rest = endpoint_id.partition("/")
    words = re.split(r"[/_-]+", rest or owner)
    return " ".join(word[:1].upper() + word[1:] for word in words if word)


def category_of(endpoint_id: str, group: str) -> str:
    """fal's search category, from the id when it names one, else from the document's group."""
    named = _CATEGORY_IN_ID.findall(endpoint_id)
    if named:
        last = named[-1]
        return {"edit": "image-to-image", "upscale": "image-to-image", "trainer": "training"}.get(
            last, "video-to-video" if last == "lipsync" else last
        )
    return _CATEGORY_BY_GROUP.get(group, group or "unknown")


def info_for(document: Document, *, runnable: bool) -> ModelInfo:
    """The :class:`ModelInfo` of a document's endpoint: ``data/catalog.json`` where it says, else derived."""
    meta = overlay().get(document.endpoint_id, {})
    name = meta.get("display_name") or display_name(document.endpoint_id)
    category = meta.get("category") or category_of(document.endpoint_id, document.group)
    description = meta.get("description") or f"{name} ({category}) on fal."
    tags = [*meta.get("tags", ()), "emulated", RUNS_OFFLINE_TAG if runnable else CATALOG_ONLY_TAG]
    if not runnable:
        name, description = f"{name} {NOT_RUNNABLE_NAME}", f"{NOT_RUNNABLE_NOTE} {description}"
    return ModelInfo(
        endpoint_id=document.endpoint_id,
        display_name=name,
        category=category,
        description=description,
        tags=tuple(tags),
        unit_price=meta.get("unit_price"),
        unit=meta.get("unit"),
        kind=meta.get("kind", "training" if category == "training" else "inference"),
        duration_estimate=meta.get("duration_estimate"),
        status=meta.get("status", "active"),
    )


@dataclass(frozen=True)
class CatalogEntry:
    """One listed endpoint: its metadata, its schemas, and the model that runs it (None: catalog only)."""

    info: ModelInfo
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    components: dict[str, dict[str, Any]]
    model: EmulatedModel | None = None
    document: Document | None = None  # served verbatim by /openapi; None: built from the schemas
    date: str = BUILTIN_DATE
    license_type: str = "commercial"
    related: tuple[str, ...] = field(default=())

    @property
    def runnable(self) -> bool:
        return self.model is not None

    @property
    def supports_stream(self) -> bool:
        return self.model is not None and self.model.supports_stream


def _entry(model: EmulatedModel | None, document: Document | None) -> CatalogEntry:
    if model is not None:
        info, inputs, outputs, components = model.info, model.input_schema, model.output_schema, model.components
    else:
        assert document is not None
        info = info_for(document, runnable=False)
        inputs, outputs, components = document.input_schema, document.output_schema, document.components
    meta = overlay().get(info.endpoint_id, {})
    return CatalogEntry(
        info=info,
        input_schema=inputs,
        output_schema=outputs,
        components=components,
        model=model,
        document=document,
        date=meta.get("date", BUILTIN_DATE),
        license_type=meta.get("license_type", "commercial"),
        related=tuple(meta.get("related", ())),
    )


def catalog(state: EmulatorState) -> list[CatalogEntry]:
    """Every listed endpoint: runnable models first (registry order), then the documents, by id."""
    docs = documents(tuple(state.config.catalog_dirs))
    models = {model.info.endpoint_id: model for model in state.models.all() if model.available}
    runnable = [_entry(model, docs.get(endpoint_id)) for endpoint_id, model in models.items()]
    rest = [_entry(None, doc) for endpoint_id, doc in sorted(docs.items()) if endpoint_id not in models]
    return [*runnable, *rest]


def find(state: EmulatorState, endpoint_id: str) -> CatalogEntry | None:
    """The entry with exactly this endpoint id."""
    wanted = endpoint_id.strip().strip("/")
    return next((entry for entry in catalog(state) if entry.info.endpoint_id == wanted), None)


def match(entries: Iterable[CatalogEntry], path: str) -> CatalogEntry | None:
    """The entry a request path addresses: the longest endpoint id it equals or starts with."""
    path = path.strip("/")
    best: CatalogEntry | None = None
    for entry in entries:
        endpoint_id = entry.info.endpoint_id
        if (path == endpoint_id or path.startswith(endpoint_id + "/")) and (
            best is None or len(endpoint_id) > len(best.info.endpoint_id)
        ):
            best = entry
    return best


def runnable_ids(state: EmulatorState) -> list[str]:
    return [model.info.endpoint_id for model in state.models.all() if model.available]
