"""Emulator settings: one dataclass, shared by every route module (core and storage/platform/realtime)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from fal_mcp.emulator.faults import FaultConfig

TIME_SCALE_ENV = "FAL_EMULATOR_TIME_SCALE"
CATALOG_DIR_ENV = "FAL_EMULATOR_CATALOG_DIR"
HISTORY_LAG_ENV = "FAL_EMULATOR_HISTORY_LAG"


@dataclass
class EmulatorConfig:
    """How the local fal behaves. Defaults mirror fal's documented numbers; tests scale time down."""

    # Multiplies every simulated processing time (model runs, log pacing); tests use ~0.01–0.05.
    time_scale: float = 1.0
    # Runners per app (owner/alias): requests beyond this wait IN_QUEUE with a real queue_position.
    concurrency_per_app: int = 2
    # Result retention after completion (fal: 1 h, 6 min for results of 10 KB or more).
    result_retention_seconds: float = 3600.0
    large_result_retention_seconds: float = 360.0
    large_result_bytes: int = 10 * 1024
    # After retention a request's full record is purged; request history keeps a summary of it, with
    # its input/output only when each is at most this big, for at most this many requests.
    history_payload_bytes: int = 64 * 1024
    history_limit: int = 10_000
    # Request history (``/v1/models/requests/by-endpoint``) as fal's spec suggests it works: a request is
    # listed only once it has finished (``ended_at``, the default sort), and this many (simulated) seconds
    # after that. ``None`` lists every request the instant it is queued (optimistic, the old behaviour).
    history_lag_seconds: float | None = None
    max_single_upload_bytes: int = 100 * 1024 * 1024
    max_request_body_bytes: int = 64 * 1024 * 1024
    # Any ``Key <x>`` (non-empty) or ``Bearer <x>`` is accepted; missing/malformed → 401.
    require_auth: bool = True
    webhook_timeout_seconds: float = 15.0
    # SSE ``: ping`` keep-alive period on status streams.
    ping_interval_seconds: float = 10.0
    # Prompts containing one of these words fail with 422 ``content_policy_violation``.
    content_policy_words: tuple[str, ...] = ("forbidden",)
    faults: FaultConfig = field(default_factory=FaultConfig)
    # More directories of fal OpenAPI documents (``*.json``/``*.json.gz``) to list beside the vendored ones.
    catalog_dirs: tuple[str, ...] = ()

    def scaled(self, seconds: float) -> float:
        """Simulated seconds → real seconds."""
        return max(0.0, seconds * self.time_scale)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> EmulatorConfig:
        """Defaults, then ``FAL_EMULATOR_TIME_SCALE`` / ``_FAULTS`` / ``_CATALOG_DIR`` / ``_HISTORY_LAG``, then
        explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get(TIME_SCALE_ENV, "").strip():
            values["time_scale"] = float(env[TIME_SCALE_ENV])
        if dirs := [part for part in env.get(CATALOG_DIR_ENV, "").split(os.pathsep) if part.strip()]:
            values["catalog_dirs"] = tuple(dirs)
        if env.get(HISTORY_LAG_ENV, "").strip():
            values["history_lag_seconds"] = float(env[HISTORY_LAG_ENV])
        values["faults"] = FaultConfig.from_env(env)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]
