"""File guards: the one place that decides which local paths a tool may read or write.

An LLM agent (possibly under prompt injection) chooses the paths our tools touch, so every
path goes through here: it must resolve (symlinks followed) to somewhere inside an allowed
root, must not pass through a dotfile or dot-directory (``.ssh``, ``.env``, ``.git``) unless
the user allowed that, must be a regular file of bounded size, and is re-checked on the open
file descriptor so a swap between check and use is caught. The URL half lives in
:mod:`fal_mcp.server.netguard`.

Nothing here reads the environment; the config builds the policies. Suggested settings:
``FAL_MCP_ALLOWED_DIRS`` (``os.pathsep``-separated extra roots), ``FAL_MCP_ALLOW_DOTFILES``,
``FAL_MCP_MAX_UPLOAD_BYTES`` (→ ``max_read_bytes``), ``FAL_MCP_MAX_DOWNLOAD_BYTES``
(→ ``max_write_bytes``).
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

MiB = 1024 * 1024
DEFAULT_MAX_READ_BYTES = 512 * MiB
DEFAULT_MAX_WRITE_BYTES = 512 * MiB

ALLOW_DOTFILES_HINT = "set FAL_MCP_ALLOW_DOTFILES=1"
ALLOWED_DIRS_HINT = "FAL_MCP_ALLOWED_DIRS"

# Longest file name we create, in UTF-8 bytes: below every common filesystem's 255, with room
# for a "-NNNN" collision suffix.
MAX_FILE_NAME_BYTES = 180
MAX_EXTENSION_CHARS = 16
# Names Windows refuses whatever the extension; harmless to avoid everywhere.
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)
_UNSAFE_NAME_CHARS = re.compile(r'[<>:"/\\|?*]')
_MAX_COLLISIONS = 10_000


class GuardError(Exception):
    """A path or URL was refused. The message says what, why, and what to do instead.

    It is meant to be shown to the model as-is (no traceback, no internals), so it can fix the
    call rather than retry it blindly.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class FilePolicy:
    """Where tools may read and write, and how much.

    ``roots`` must already be resolved (see :func:`roots_from`). ``max_read_bytes`` caps files read
    for upload; ``max_write_bytes`` caps files saved (the downloader passes it as ``UrlPolicy.max_bytes``).
    """

    roots: tuple[Path, ...]
    allow_dotfiles: bool = False
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES


@dataclass(frozen=True)
class ReadableFile:
    """A local file that passed every read check; :meth:`open` re-checks it on the descriptor."""

    path: Path
    size: int
    mime_type: str
    name: str
    device: int
    inode: int
    max_bytes: int

    def open(self) -> BinaryIO:
        """Open for reading, refusing if the file was swapped or grew past the cap since it was checked.

        ``O_NOFOLLOW`` refuses a final component replaced by a symlink; comparing device and inode
        on the descriptor refuses any other swap (a directory above replaced by a symlink, a file
        replaced by a FIFO). ``O_NONBLOCK`` keeps a swapped-in FIFO from hanging the open.
        """
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            raise GuardError(
                f"{self.path} could not be opened ({exc.strerror or exc}). "
                "It may have been replaced by a link or removed after it was checked; pass the path again."
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (self.device, self.inode):
                raise GuardError(
                    f"{self.path} is refused: it changed while being checked (it is no longer the same regular file). "
                    "Pass the path again."
                )
            if st.st_size > self.max_bytes:
                raise GuardError(_too_large(self.path, st.st_size, self.max_bytes))
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise


# --------------------------------------------------------------------------- roots


def roots_from(client_roots: Iterable[str] | None, cwd: Path, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The allowed roots: the client's ``file://`` roots if it offers any (else ``cwd``), plus ``extra``.

    Each is resolved (symlinks followed, so containment checks compare real paths), kept only if it
    is an existing directory, and de-duplicated in order. Non-``file`` URIs and remote hosts are ignored.
    """
    from_client = [path for uri in client_roots or () if (path := _file_uri_path(uri)) is not None]
    candidates = [*(from_client or [cwd]), *extra]
    roots: list[Path] = []
    for candidate in candidates:
        try:
            resolved = Path(candidate).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if resolved.is_dir() and resolved not in roots:
            roots.append(resolved)
    return tuple(roots)


def _file_uri_path(uri: str) -> Path | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme.lower() != "file" or parts.netloc.lower() not in ("", "localhost"):
        return None
    path = unquote(parts.path)
    if not path.startswith("/") or "\x00" in path:
        return None
    return Path(path)


# --------------------------------------------------------------------------- reading


def resolve_readable(policy: FilePolicy, raw: str, base: Path) -> ReadableFile:
    """Check a path a tool was given to read (relative paths are relative to ``base``)."""
    given = _absolute(raw, base)
    # Containment and dotfile checks run before anything reveals whether the file exists, so a
    # path outside the roots gets the same answer either way.
    resolved = _resolve_loose(given, raw)
    _check_inside(policy, resolved, raw, action="read")
    _check_dotfiles(policy, given, resolved)
    try:
        resolved = given.resolve(strict=True)
    except FileNotFoundError:
        raise GuardError(
            f"{raw} was not found (looked at {given}). Check the spelling, or give a path relative to {base}."
        ) from None
    except (OSError, RuntimeError) as exc:
        raise GuardError(f"{raw} cannot be read: {_os_reason(exc)}.") from None
    # A link may have appeared since the loose resolve; check the final answer again.
    _check_inside(policy, resolved, raw, action="read")
    _check_dotfiles(policy, given, resolved)
    try:
        st = resolved.stat()
    except OSError as exc:
        raise GuardError(f"{raw} cannot be read: {_os_reason(exc)}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise GuardError(
            f"{raw} is refused: it is {_file_kind(st.st_mode)}, not a regular file. Pass the path of a regular file."
        )
    if st.st_size > policy.max_read_bytes:
        raise GuardError(_too_large(Path(raw), st.st_size, policy.max_read_bytes))
    if not os.access(resolved, os.R_OK):
        raise GuardError(f"{raw} is refused: this process has no permission to read it.")
    mime_type, _ = mimetypes.guess_type(resolved.name)
    return ReadableFile(
        path=resolved,
        size=st.st_size,
        mime_type=mime_type or "application/octet-stream",
        name=resolved.name,
        device=st.st_dev,
        inode=st.st_ino,
        max_bytes=policy.max_read_bytes,
    )


# --------------------------------------------------------------------------- writing


def resolve_writable_dir(policy: FilePolicy, raw: str, base: Path, create: bool = True) -> Path:
    """Check (and by default create) a directory a tool was asked to write into; returns its real path."""
    given = _absolute(raw, base)
    # Non-strict resolve follows every link in the existing prefix and applies ".." in order, so
    # the path we check is the path the kernel would use.
    resolved = _resolve_loose(given, raw)
    _check_inside(policy, resolved, raw, action="write to")
    _check_dotfiles(policy, given, resolved)
    if create:
        try:
            resolved.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise GuardError(f"{raw} is refused: it exists and is not a directory. Choose a directory.") from None
        except OSError as exc:
            raise GuardError(f"{raw} could not be created: {_os_reason(exc)}.") from None
    try:
        final = resolved.resolve(strict=True)
    except FileNotFoundError:
        raise GuardError(f"{raw} does not exist. Create it first or choose an existing directory.") from None
    except (OSError, RuntimeError) as exc:
        raise GuardError(f"{raw} cannot be used: {_os_reason(exc)}.") from None
    _check_inside(policy, final, raw, action="write to")
    _check_dotfiles(policy, given, final)
    if not final.is_dir():
        raise GuardError(f"{raw} is refused: it is not a directory. Choose a directory.")
    return final


def sanitize_file_name(name: str, default: str = "output") -> str:
    """A safe leaf name from an untrusted one (a URL path, Content-Disposition, a model's choice).

    Basename only, no separators or control characters, no leading dots (never a hidden file),
    no Windows-reserved names, bounded length with the extension kept.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE_NAME_CHARS.sub("_", name)
    name = re.sub(r"^[\s.]+|[\s.]+$", "", name)
    if not name:
        return default
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXTENSION_CHARS:
        stem, ext = name, ""
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    suffix = f".{ext}" if ext else ""
    budget = MAX_FILE_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ") or default
    return f"{stem}{suffix}"


def safe_output_path(directory: Path, file_name: str) -> tuple[Path, BinaryIO]:
    """Create a new file in ``directory`` (already checked) named after ``file_name``, never overwriting.

    The name is sanitised; if it is taken, ``-1``, ``-2``… go before the extension. Creation is
    exclusive (``O_EXCL``, relative to a descriptor of the directory), so a concurrent writer or
    a planted symlink cannot make us write somewhere else. Returns the path and the open file.
    """
    clean = sanitize_file_name(file_name)
    stem, dot, ext = clean.rpartition(".")
    if not dot:
        stem, ext = clean, ""
    suffix = f".{ext}" if ext else ""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    use_dir_fd = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY) if use_dir_fd else None
    try:
        for attempt in range(_MAX_COLLISIONS):
            candidate = clean if attempt == 0 else f"{stem}-{attempt}{suffix}"
            try:
                if dir_fd is not None:
                    fd = os.open(candidate, flags, 0o644, dir_fd=dir_fd)
                else:
                    fd = os.open(directory / candidate, flags, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise GuardError(f"could not create {candidate} in {directory}: {_os_reason(exc)}.") from None
            return directory / candidate, os.fdopen(fd, "wb")
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    raise GuardError(f"{directory} already holds too many files named like {clean}. Choose another name or folder.")


# --------------------------------------------------------------------------- checks


def _absolute(raw: str, base: Path) -> Path:
    if not raw or "\x00" in raw:
        raise GuardError("an empty path or a path with a NUL byte is refused. Pass a file path.")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def _resolve_loose(path: Path, raw: str) -> Path:
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise GuardError(f"{raw} cannot be used: {_os_reason(exc)}.") from None


def _check_inside(policy: FilePolicy, resolved: Path, raw: str, action: str) -> None:
    if any(resolved.is_relative_to(root) for root in policy.roots):
        return
    if not policy.roots:
        raise GuardError(
            f"{raw} is refused: no directory is allowed for file access. "
            f"Ask the user to open a project folder or set {ALLOWED_DIRS_HINT}."
        )
    allowed = ", ".join(str(root) for root in policy.roots)
    where = f" (it resolves to {resolved})" if str(resolved) != raw else ""
    raise GuardError(
        f"{raw} is refused: tools may only {action} files inside the allowed directories ({allowed}){where}. "
        f"Move or copy the file into one of them, or ask the user to add its folder to {ALLOWED_DIRS_HINT}."
    )


def _check_dotfiles(policy: FilePolicy, given: Path, resolved: Path) -> None:
    """Refuse any component below its root that starts with a dot, in the path as given and as resolved."""
    if policy.allow_dotfiles:
        return
    for path in (Path(os.path.normpath(given)), resolved):
        hidden = _hidden_parts(path, policy.roots)
        if hidden:
            raise GuardError(
                f"{path} is refused: dotfiles and dot-directories ({hidden[0]}) are protected because they "
                "often hold secrets. Move the file to a normal folder inside the project, "
                f"or ask the user to {ALLOW_DOTFILES_HINT}."
            )


def _hidden_parts(path: Path, roots: tuple[Path, ...]) -> list[str]:
    # Below the deepest root the path is lexically inside; a path inside no root (given through a
    # link) is judged on all its parts, which errs on the side of refusing.
    below = path.parts
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        if path.is_relative_to(root):
            below = path.relative_to(root).parts
            break
    return [part for part in below if part.startswith(".") and part not in (".", "..")]


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _too_large(path: Path, size: int, limit: int) -> str:
    return (
        f"{path} is refused: it is {_human(size)}, over the {_human(limit)} limit. "
        "Use a smaller file, or ask the user to raise FAL_MCP_MAX_UPLOAD_BYTES."
    )


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < MiB:
        return f"{size / 1024:.1f} KiB"
    if size < 1024 * MiB:
        return f"{size / MiB:.1f} MiB"
    return f"{size / (1024 * MiB):.1f} GiB"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError):
        return "symlink loop"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
