"""Server settings: one typed model, read once from the environment (and CLI flags), with clear errors."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp.fal.hosts import EMULATOR_PREFIXES, FalHosts
from fal_mcp.log import FORMAT_ENV, LEVEL_ENV
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


def _setting(default: Any, env: str, shown: str, doc: str, *, also: tuple[EnvRow, ...] = (), **kwargs: Any) -> Any:
    """A Settings field with its environment variable(s), its default as the README shows it and its meaning.

    ``env`` may name several variables (``"A, B"``); ``also`` adds README rows for variables that shape
    this field without being it (``FAL_MCP_NO_DISK_CACHE`` for the cache directory).
    """
    extra: dict[str, Any] = {"env": env, "shown": shown, "also": [list(row) for row in also]}
    return Field(default, description=doc, json_schema_extra=extra, **kwargs)


class EnvRow(NamedTuple):
    """One row of the README's configuration table."""

    names: str  # comma-separated variable names
    default: str  # as shown to people
    meaning: str


class Settings(BaseModel):
    """Everything the server can be told: every ``FAL_MCP_*`` environment variable is a field here, and the
    README's configuration table is generated from these fields (``python -m fal_mcp.config --readme``)."""

    model_config = ConfigDict(frozen=True)

    # Waiting and progress
    wait_seconds: float | None = _setting(
        None,
        "FAL_MCP_WAIT_SECONDS",
        "`50`; `900` in Claude Code",
        "Longest `fal_subscribe`/`queue_result` wait before returning the `request_id` (1–3600). Unset, it "
        "follows the client: Claude Code backgrounds calls running over 2 min and its idle timeout (30 min) is "
        "reset by our progress, so it waits 15 min.",
    )
    heartbeat_seconds: float = _setting(
        5.0, "FAL_MCP_HEARTBEAT_SECONDS", "`5`", "Progress heartbeat while waiting (≤ 10)."
    )
    on_client_cancel: Literal["cancel", "keep"] = _setting(
        "cancel",
        "FAL_MCP_ON_CLIENT_CANCEL",
        "`cancel`",
        "`cancel` the fal request when the client cancels a waiting call, or `keep` it running.",
    )
    reuse_window_seconds: float = _setting(
        900.0,
        "FAL_MCP_REUSE_WINDOW_SECONDS",
        "`900`",
        "An identical `fal_subscribe` finished this recently re-attaches instead of paying again.",
    )
    # Money
    max_cost_usd: float | None = _setting(
        None,
        "FAL_MCP_MAX_COST_USD",
        "unset",
        "Refuse calls whose estimated cost is above this; a call whose cost cannot be estimated asks for "
        "approval (see [Spend control](#spend-control)).",
    )
    confirm_above_usd: float | None = _setting(
        None,
        "FAL_MCP_CONFIRM_ABOVE_USD",
        "unset",
        "Ask the user before a call estimated above this (a form in hosts with elicitation, else a one-time "
        "`confirm_token`).",
    )
    budget_usd_per_day: float | None = _setting(
        None,
        "FAL_MCP_BUDGET_USD_PER_DAY",
        "unset",
        "Refuse calls that would take the estimated spend of the last 24 hours (from the ledger) past this.",
    )
    budget_usd_per_session: float | None = _setting(
        None,
        "FAL_MCP_BUDGET_USD_PER_SESSION",
        "unset",
        "The same for this server process (per caller over HTTP `--per-user`).",
    )
    require_approval: bool = _setting(
        False,
        "FAL_MCP_REQUIRE_APPROVAL",
        "`0`",
        "Mark paying tools with `anthropic/requiresUserInteraction` so Claude Code asks before every call.",
    )
    validate_input: bool = _setting(
        True, "FAL_MCP_VALIDATE_INPUT", "`1`", "Validate inputs against the model's schema before submitting."
    )
    reconcile_window_seconds: float = _setting(
        6 * 3600.0,
        "FAL_MCP_RECONCILE_WINDOW_SECONDS",
        "`21600`",
        "How long a submit whose answer was lost is looked for in fal's request history (it is never sent again).",
    )
    # Not an environment variable: tests shorten it.
    reconcile_first_delay_seconds: float = Field(2.0, description="First look in fal's history after a lost answer.")
    # Privacy (fal's platform headers)
    output_expiration_seconds: int | None = _setting(
        None,
        "FAL_MCP_OUTPUT_EXPIRATION_SECONDS",
        "account setting",
        "fal deletes the files a job generates after this many seconds (`X-Fal-Object-Lifecycle-Preference`); "
        "per call: `expiration_seconds` on `fal_subscribe`/`queue_submit`.",
    )
    store_payload: bool = _setting(
        True,
        "FAL_MCP_STORE_PAYLOAD",
        "`1`",
        "`0`: fal keeps no copy of each request's input and output (`X-Fal-Store-IO: 0`); per call: "
        "`store_payload`. `jobs_list` works from the local ledger either way; a lost submit answer then cannot "
        'be found by its payload and stays "outcome unknown".',
    )
    # Results
    thumbnails: bool = _setting(True, "FAL_MCP_THUMBNAILS", "`1`", "Inline image thumbnails in results.")
    thumbnail_max_px: int = _setting(512, "FAL_MCP_THUMBNAIL_MAX_PX", "`512`", "Longest thumbnail side.")
    thumbnail_max_bytes: int = _setting(100_000, "FAL_MCP_THUMBNAIL_MAX_BYTES", "`100000`", "Largest thumbnail (JPEG).")
    # Files and URLs
    allowed_dirs: tuple[Path, ...] = _setting(
        (),
        "FAL_MCP_ALLOWED_DIRS",
        "—",
        "Extra directories files may be read from / saved to (`:`-separated), besides the client's roots or the "
        "working directory.",
    )
    allow_dotfiles: bool = _setting(
        False, "FAL_MCP_ALLOW_DOTFILES", "`0`", "Allow dotfiles and dot-directories (`.env`, `.ssh`, …)."
    )
    max_upload_bytes: int = _setting(
        1024**3, "FAL_MCP_MAX_UPLOAD_BYTES", "`1073741824`", "Largest local file or URL download to upload."
    )
    max_download_bytes: int = _setting(
        2 * 1024**3, "FAL_MCP_MAX_DOWNLOAD_BYTES", "`2147483648`", "Largest output file saved into `download_dir`."
    )
    allow_private_urls: bool = _setting(
        False,
        "FAL_MCP_ALLOW_PRIVATE_URLS",
        "`0`",
        "Let `upload_file(url=…)` fetch private, loopback and link-local addresses.",
    )
    # Saved files (download_dir)
    file_name_template: str = _setting(
        DEFAULT_TEMPLATE,
        "FAL_MCP_FILE_NAME_TEMPLATE",
        f"`{DEFAULT_TEMPLATE}`",
        "Names of files saved into `download_dir` (see [Saved files](#saved-files)); a bad template stops "
        "start-up with a message.",
    )
    provenance: bool = _setting(
        True,
        "FAL_MCP_PROVENANCE",
        "`1`",
        "Write endpoint, request id, seed, prompt and time into saved PNG/JPEG/WebP images.",
    )
    gallery: bool = _setting(
        True,
        "FAL_MCP_GALLERY",
        "`1`",
        "Keep an `index.html` gallery and its `fal-gallery.json` in each `download_dir`.",
    )
    apps: bool = _setting(
        True,
        "FAL_MCP_APPS",
        "`1`",
        "Offer the in-chat gallery and job monitor ([MCP App](#in-chat-gallery-mcp-apps)) to hosts that render "
        "MCP Apps; `0` removes it (tool results are the same either way).",
    )
    # State
    ledger_path: Path | None = _setting(
        None,
        "FAL_MCP_LEDGER",
        "state dir",
        "The job ledger file. Default `${CLAUDE_PLUGIN_DATA}/ledger.sqlite3` when `CLAUDE_PLUGIN_DATA` is set, "
        "else the user state dir (`~/.local/state/fal-mcp/ledger.sqlite3` on Linux).",
        also=(EnvRow("CLAUDE_PLUGIN_DATA", "—", "Set by Claude Code for plugins; the ledger lives there."),),
    )
    ledger_keep_days: float = _setting(
        30.0,
        "FAL_MCP_LEDGER_KEEP_DAYS",
        "`30`",
        "Finished jobs untouched this long leave the ledger (checked at a caller's first call and every 6 h); "
        "unfinished ones are kept.",
    )
    ledger_keep_jobs: int = _setting(
        10_000,
        "FAL_MCP_LEDGER_KEEP_JOBS",
        "`10000`",
        "At most this many finished jobs are kept per caller (the newest).",
    )
    cache_dir: Path | None = _setting(
        None, "FAL_MCP_CACHE_DIR", "user cache dir", "Schema/search/price cache (`~/.cache/fal-mcp`)."
    )
    disk_cache: bool = _setting(
        True, "FAL_MCP_NO_DISK_CACHE", "unset", "Set (to anything): keep the cache in memory only."
    )
    ca_file: Path | None = _setting(
        None, "FAL_MCP_CA_FILE", "—", "Extra CA bundle (e.g. the emulator's `ca.pem` in https mode)."
    )
    # Where fal is
    local: bool = _setting(
        False,
        "FAL_MCP_LOCAL",
        "`0`",
        "Same as `--local`: serve against the embedded emulator. Its jobs are kept apart in the ledger (under the "
        "emulator's origin, new in each process): they never show up in, or re-attach from, real fal's view, and "
        "`jobs_list` says which fal ran each job (`fal`).",
    )
    emulator_time_scale: float = _setting(
        1.0,
        "FAL_MCP_EMULATOR_TIME_SCALE",
        "`1`",
        "With `--local`: multiply the emulator's simulated processing times.",
    )
    hosts: FalHosts = _setting(
        FalHosts(),
        "FAL_MCP_BASE_URL",
        "—",
        "Point every fal role at one origin (an emulator), e.g. `http://127.0.0.1:8790`.",
        also=(
            EnvRow(
                ", ".join(f"FAL_MCP_{role.upper()}_URL" for role in EMULATOR_PREFIXES),
                "fal's hosts",
                "Override one role's base URL.",
            ),
        ),
    )
    # HTTP transport: the bearer token clients must send (checked by fal_mcp.server.http.check_exposure).
    http_token: str | None = _setting(
        None,
        "FAL_MCP_HTTP_TOKEN",
        "—",
        "Bearer token (≥ 16 printable characters, no spaces) HTTP clients must send; required off loopback.",
        repr=False,
    )
    # Logging is configured before the settings are read (fal_mcp.log reads these two itself).
    log_level: str = _setting("INFO", LEVEL_ENV, "`INFO`", "Log level; logs go to stderr, never stdout.")
    log_format: Literal["json", "console"] = _setting("json", FORMAT_ENV, "`json`", "`json` or `console`.")

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
            "disk_cache": not env.get("FAL_MCP_NO_DISK_CACHE"),  # as default_cache_dir reads it
        }
        level = env.get(LEVEL_ENV, "").strip().upper()
        if level:
            if level not in logging.getLevelNamesMapping():
                raise ConfigError(f"{LEVEL_ENV} must be DEBUG, INFO, WARNING or ERROR, got {env[LEVEL_ENV]!r}")
            values["log_level"] = level
        log_format = env.get(FORMAT_ENV, "").strip().lower()
        if log_format:
            if log_format not in ("json", "console"):
                raise ConfigError(f"{FORMAT_ENV} must be 'json' or 'console', got {env[FORMAT_ENV]!r}")
            values["log_format"] = log_format
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


# --- the README's configuration table ------------------------------------------------------------------------

BEGIN = "<!-- settings:begin (generated by python -m fal_mcp.config --readme) -->"
END = "<!-- settings:end -->"

# Variables that are not server settings: the key (read by the fal client, never held in Settings) and the
# standalone emulator's own (fal_mcp/emulator/config.py).
KEY_ROWS = (
    EnvRow(
        "FAL_KEY",
        "—",
        "Your fal.ai key. `FAL_KEY_ID` + `FAL_KEY_SECRET` also work. An unexpanded `${FAL_KEY}` is reported as "
        '"not configured". Without a key `model_search`/`model_schema` still work.',
    ),
    EnvRow("FAL_KEY_ID, FAL_KEY_SECRET", "—", "The key in two halves (used when `FAL_KEY` is unset)."),
)
EMULATOR_ROWS = (
    EnvRow("FAL_EMULATOR_TIME_SCALE", "`1`", "`fal-mcp emulator`: processing-time multiplier."),
    EnvRow(
        "FAL_EMULATOR_HISTORY_LAG",
        "—",
        "`fal-mcp emulator`: request history lists a request only once it has finished, this many (simulated) "
        "seconds later, as on fal. Unset: listed at once.",
    ),
    EnvRow(
        "FAL_EMULATOR_FAULTS",
        "—",
        "`fal-mcp emulator`: fault injection, e.g. `rate=0.2,kinds=429,503,drop,slow,sse_break`.",
    ),
    EnvRow(
        "FAL_EMULATOR_CATALOG_DIR",
        "—",
        "Emulator: more directories (`:`-separated) of fal OpenAPI documents to list and serve beside the "
        "vendored ones.",
    ),
)


def settings_rows() -> list[EnvRow]:
    """The rows for Settings' own fields, in field order (fields without a variable are not listed)."""
    rows = []
    for field in Settings.model_fields.values():
        extra = field.json_schema_extra
        if not isinstance(extra, dict) or "env" not in extra:
            continue
        rows.append(EnvRow(str(extra["env"]), str(extra["shown"]), field.description or ""))
        rows += [EnvRow(*row) for row in extra["also"]]  # type: ignore[misc, union-attr]
    return rows


def settings_variables() -> set[str]:
    """Every environment variable a Settings field is read from."""
    return {name.strip() for row in settings_rows() for name in row.names.split(",")} - {"CLAUDE_PLUGIN_DATA"}


def render_env_table() -> str:
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for row in (*KEY_ROWS, *settings_rows(), *EMULATOR_ROWS):
        names = ", ".join(f"`{name.strip()}`" for name in row.names.split(","))
        lines.append(f"| {names} | {row.default} | {' '.join(row.meaning.split()).replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def write_readme(readme: Path = Path(__file__).resolve().parents[1] / "README.md") -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + render_env_table() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--readme"]:
        sys.exit("usage: python -m fal_mcp.config --readme  (rewrites README.md's configuration table)")
    write_readme()
