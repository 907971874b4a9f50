"""The emulator's built-in models and how a requested path finds one."""

from __future__ import annotations

from collections.abc import Iterable

from fal_mcp.emulator.models.base import EmulatedModel, ModelError, ModelInfo, RunContext
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import InvalidEndpointIdError

__all__ = ["EmulatedModel", "ModelError", "ModelInfo", "ModelRegistry", "RunContext", "default_registry"]


def app_of(path: str) -> str | None:
    """``[ns/]owner/alias`` of a requested path, or None when it is no valid endpoint id."""
    try:
        return EndpointId.parse(path).app
    except InvalidEndpointIdError:
        return None


class ModelRegistry:
    """Endpoint id → model. A path resolves to the longest registered id it starts with."""

    def __init__(self, models: Iterable[EmulatedModel] = ()) -> None:
        self._models: dict[str, EmulatedModel] = {}
        for model in models:
            self.add(model)

    def add(self, model: EmulatedModel) -> None:
        self._models[model.info.endpoint_id] = model

    def get(self, endpoint_id: str) -> EmulatedModel | None:
        """The model serving ``endpoint_id`` (a request path like ``fal-ai/flux/dev/image-to-image``)."""
        path = endpoint_id.strip("/")
        best: EmulatedModel | None = None
        for model_id, model in self._models.items():
            if (path == model_id or path.startswith(model_id + "/")) and (
                best is None or len(model_id) > len(best.info.endpoint_id)
            ):
                best = model
        return best

    def all(self) -> list[EmulatedModel]:
        return list(self._models.values())

    def by_app(self, owner_alias: str) -> list[EmulatedModel]:
        """Models of one app (``owner/alias``), e.g. both ``fal-ai/flux/dev`` endpoints for ``fal-ai/flux``."""
        return [m for m in self._models.values() if app_of(m.info.endpoint_id) == owner_alias]


def default_registry() -> ModelRegistry:
    from fal_mcp.emulator.models.fast_lcm_diffusion import FastLcmDiffusion
    from fal_mcp.emulator.models.flux_dev import FluxDev
    from fal_mcp.emulator.models.flux_image_to_image import FluxImageToImage
    from fal_mcp.emulator.models.kokoro import KokoroAmericanEnglish
    from fal_mcp.emulator.models.llm import OpenRouterRouter
    from fal_mcp.emulator.models.nano_banana_edit import NanoBananaEdit
    from fal_mcp.emulator.models.slow import Slow
    from fal_mcp.emulator.models.strict import Strict
    from fal_mcp.emulator.models.veo3 import Veo3
    from fal_mcp.emulator.models.wizper import Wizper

    return ModelRegistry(
        [
            FluxDev(),
            FluxImageToImage(),
            NanoBananaEdit(),
            Veo3(),
            KokoroAmericanEnglish(),
            Wizper(),
            OpenRouterRouter(),
            FastLcmDiffusion(),
            Slow(),
            Strict(),
        ]
    )
