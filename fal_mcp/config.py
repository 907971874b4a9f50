"""Server settings: one typed model, read once from the environment (and CLI flags), with clear errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp.fal.hosts import FalHosts
from fal_mcp.naming import DEFAULT_TEMPLATE, NameTemplate, TemplateError
from fal_mcp.spend import SpendLimits


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable and what it accepts."""


# What an MCP bundle host (Claude Desktop) passes for an optional user_config field the user left empty:
# the placeholder itself. It means "not set", never a value (any other placeholder still fails loudly).
_UNSET_BUNDLE_FIELD = re.compile(r"^\$\{user_config\.[A-Za-z0-9_]+\}$")


def without_unset_bundle_fields(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less the variables a bundle host left as ``${user_config.<field>}`` (the user set nothing)."""
    return {name: value for name, value in env.items() if not _UNSET_BUNDLE_FIELD.match(value.strip())}


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0 (or true/false), got {raw!r}")


def _env_float(env: Mapping[str, str], name: str, default: float | None, lo: float, hi: float) -> float | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between {lo:g} and {hi:g}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {raw!r}")
    return value


def _env_int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = _env_float(env, name, float(default), lo, hi)
    assert value is not None
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


def _env_paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    raw = env.get(name, "")
    return tuple(Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip())


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The on-disk catalog cache (``None``: memory only, when ``FAL_MCP_NO_DISK_CACHE`` is set)."""
    env = os.environ if env is None else env
    if env.get("FAL_MCP_NO_DISK_CACHE"):
        return None
    import platformdirs

    return platformdirs.user_cache_path("fal-mcp")


class Settings(BaseModel):
    """Everything the server can be told. Field names match ``FAL_MCP_<NAME>`` environment variables."""

    model_config = ConfigDict(frozen=True)

    # Waiting and progress
    wait_seconds: float | None = Field(
        None,
        description="Longest a tool waits for a job before returning its request id. Unset: ~50 s, longer for "
        "Claude Code, which backgrounds long calls (fal_mcp.server.jobs.default_wait_seconds).",
    )
    heartbeat_seconds: float = Field(5.0, description="Progress heartbeat interval while waiting.")
    on_client_cancel: Literal["cancel", "keep"] = Field(
        "cancel", description="What happens to the fal request when the client cancels a waiting call."
    )
    reuse_window_seconds: float = Field(
        900.0, description="An identical fal_subscribe finished this recently re-attaches instead of paying again."
    )
    # Money
    max_cost_usd: float | None = Field(None, description="Refuse calls whose estimated cost exceeds this.")
    confirm_above_usd: float | None = Field(None, description="Ask the user before a call estimated above this.")
    budget_usd_per_day: float | None = Field(None, description="Refuse calls past this estimated spend per 24 h.")
    budget_usd_per_session: float | None = Field(None, description="The same, per server process (and caller).")
    require_approval: bool = Field(False, description="Mark paying tools so the host asks before every call.")
    validate_input: bool = Field(True, description="Check inputs against the model's schema before submitting.")
    reconcile_window_seconds: float = Field(
        6 * 3600.0, description="How long a submit whose answer was lost is looked for in fal's request history."
    )
    reconcile_first_delay_seconds: float = Field(2.0, description="First look in fal's history after a lost answer.")
    # Privacy (fal's platform headers)
    output_expiration_seconds: int | None = Field(None, description="fal deletes output files after this long.")
    store_payload: bool = Field(True, description="0: fal keeps no copy of inputs/outputs (X-Fal-Store-IO: 0).")
    # Results
    thumbnails: bool = True
    thumbnail_max_px: int = 512
    thumbnail_max_bytes: int = 100_000
    # Files and URLs
    allowed_dirs: tuple[Path, ...] = ()
    allow_dotfiles: bool = False
    max_upload_bytes: int = 1024 * 1024 * 1024
    max_download_bytes: int = 2 * 1024 * 1024 * 1024
    allow_private_urls: bool = False
    # Saved files (download_dir)
    file_name_template: str = Field(DEFAULT_TEMPLATE, description="Names of files saved into download_dir.")
    provenance: bool = Field(True, description="Write endpoint, request id, seed, prompt and time into saved images.")
    gallery: bool = Field(True, description="Keep an index.html gallery (and fal-gallery.json) in download_dir.")
    apps: bool = Field(True, description="Offer the in-chat gallery (an MCP App) to hosts that render MCP Apps.")
    # State
    ledger_path: Path | None = None
    ledger_keep_days: float = Field(30.0, description="Finished jobs older than this leave the ledger.")
    ledger_keep_jobs: int = Field(10_000, description="At most this many finished jobs are kept.")
    cache_dir: Path | None = None
    ca_file: Path | None = None
    # Where fal is
    hosts: FalHosts = Field(default_factory=FalHosts)
    local: bool = Field(False, description="Serve against the embedded offline emulator (no key needed).")
    # HTTP transport: the bearer token clients must send (checked by fal_mcp.server.http.check_exposure).
    http_token: str | None = Field(None, repr=False)
    emulator_time_scale: float = 1.0

    @property
    def spend_limits(self) -> SpendLimits:
        return SpendLimits(
            max_cost_usd=self.max_cost_usd,
            confirm_above_usd=self.confirm_above_usd,
            budget_usd_per_day=self.budget_usd_per_day,
            budget_usd_per_session=self.budget_usd_per_session,
        )

    def privacy_options(
        self, expiration_seconds: int | None = None, store_payload: bool | None = None
    ) -> dict[str, Any]:
        """fal's privacy headers for one paid call: its own arguments, else these settings (``{}``: fal's defaults).

        ``object_lifecycle``: generated files expire after N seconds; ``store_io=False``: fal keeps no copy
        of the request's input and output (jobs_list works from the ledger, never from fal's stored payloads).
        """
        options: dict[str, Any] = {}
        expiration = expiration_seconds if expiration_seconds is not None else self.output_expiration_seconds
        if expiration is not None:
            options["object_lifecycle"] = {"expiration_duration_seconds": int(expiration)}
        store = self.store_payload if store_payload is None else store_payload
        if not store:
            options["store_io"] = False
        return options

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = without_unset_bundle_fields(os.environ if env is None else env)
        values: dict[str, Any] = {
            "wait_seconds": _env_float(env, "FAL_MCP_WAIT_SECONDS", None, 1, 3600),  # unset: adapts to the client
            "heartbeat_seconds": _env_float(env, "FAL_MCP_HEARTBEAT_SECONDS", 5.0, 0.05, 10),
            "reuse_window_seconds": _env_float(env, "FAL_MCP_REUSE_WINDOW_SECONDS", 900.0, 0, 30 * 86400),
            "max_cost_usd": _env_float(env, "FAL_MCP_MAX_COST_USD", None, 0, 1_000_000),
            "confirm_above_usd": _env_float(env, "FAL_MCP_CONFIRM_ABOVE_USD", None, 0, 1_000_000),
            "budget_usd_per_day": _env_float(env, "FAL_MCP_BUDGET_USD_PER_DAY", None, 0, 1_000_000),
            "budget_usd_per_session": _env_float(env, "FAL_MCP_BUDGET_USD_PER_SESSION", None, 0, 1_000_000),
            "require_approval": _env_bool(env, "FAL_MCP_REQUIRE_APPROVAL", False),
            "validate_input": _env_bool(env, "FAL_MCP_VALIDATE_INPUT", True),
            "reconcile_window_seconds": _env_float(env, "FAL_MCP_RECONCILE_WINDOW_SECONDS", 6 * 3600.0, 60, 7 * 86400),
            "store_payload": _env_bool(env, "FAL_MCP_STORE_PAYLOAD", True),
            "thumbnails": _env_bool(env, "FAL_MCP_THUMBNAILS", True),
            "thumbnail_max_px": _env_int(env, "FAL_MCP_THUMBNAIL_MAX_PX", 512, 16, 4096),
            "thumbnail_max_bytes": _env_int(env, "FAL_MCP_THUMBNAIL_MAX_BYTES", 100_000, 1_000, 5_000_000),
            "allowed_dirs": _env_paths(env, "FAL_MCP_ALLOWED_DIRS"),
            "allow_dotfiles": _env_bool(env, "FAL_MCP_ALLOW_DOTFILES", False),
            "max_upload_bytes": _env_int(env, "FAL_MCP_MAX_UPLOAD_BYTES", 1024**3, 1, 50 * 1024**3),
            "max_download_bytes": _env_int(env, "FAL_MCP_MAX_DOWNLOAD_BYTES", 2 * 1024**3, 1, 50 * 1024**3),
            "allow_private_urls": _env_bool(env, "FAL_MCP_ALLOW_PRIVATE_URLS", False),
            "ledger_keep_days": _env_float(env, "FAL_MCP_LEDGER_KEEP_DAYS", 30.0, 1, 3650),
            "ledger_keep_jobs": _env_int(env, "FAL_MCP_LEDGER_KEEP_JOBS", 10_000, 10, 10_000_000),
            "provenance": _env_bool(env, "FAL_MCP_PROVENANCE", True),
            "gallery": _env_bool(env, "FAL_MCP_GALLERY", True),
            "apps": _env_bool(env, "FAL_MCP_APPS", True),
            "local": _env_bool(env, "FAL_MCP_LOCAL", False),
            "emulator_time_scale": _env_float(env, "FAL_MCP_EMULATOR_TIME_SCALE", 1.0, 0.001, 100),
        }
        if env.get("FAL_MCP_OUTPUT_EXPIRATION_SECONDS", "").strip():
            values["output_expiration_seconds"] = _env_int(
                env, "FAL_MCP_OUTPUT_EXPIRATION_SECONDS", 0, 1, 10 * 365 * 86400
            )
        cancel = env.get("FAL_MCP_ON_CLIENT_CANCEL", "").strip().lower()
        if cancel:
            if cancel not in ("cancel", "keep"):
                raise ConfigError(f"FAL_MCP_ON_CLIENT_CANCEL must be 'cancel' or 'keep', got {cancel!r}")
            values["on_client_cancel"] = cancel
        for name, key in (("FAL_MCP_LEDGER", "ledger_path"), ("FAL_MCP_CACHE_DIR", "cache_dir")):
            if env.get(name, "").strip():
                values[key] = Path(env[name]).expanduser()
        if env.get("FAL_MCP_FILE_NAME_TEMPLATE", "").strip():
            try:
                values["file_name_template"] = NameTemplate.parse(env["FAL_MCP_FILE_NAME_TEMPLATE"]).text
            except TemplateError as exc:
                raise ConfigError(f"FAL_MCP_FILE_NAME_TEMPLATE: {exc}") from None
        if env.get("FAL_MCP_HTTP_TOKEN"):  # kept as given: a blank or spaced token is refused at start-up
            values["http_token"] = env["FAL_MCP_HTTP_TOKEN"]
        if env.get("FAL_MCP_CA_FILE", "").strip():
            values["ca_file"] = Path(env["FAL_MCP_CA_FILE"]).expanduser()
        try:
            values["hosts"] = FalHosts.from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        values.update(overrides)
        return cls(**values)
