"""File guards: the one place that decides which local paths a tool may read or write.

An LLM agent (possibly under prompt injection) chooses the paths our tools touch, so every
path goes through here: it must resolve (symlinks followed) to somewhere inside an allowed
root, must not pass through a dotfile or dot-directory (``.ssh``, ``.env``, ``.git``) unless
the user allowed that, must be a regular file of bounded size, and is re-checked on the open
file descriptor so a swap between check and use is caught. The URL half lives in
:mod:`fal_mcp.server.netguard`.

Below an allowed root nothing is opened by path: every file and directory is reached one
component at a time from a descriptor of the root, never following a link (``O_NOFOLLOW``), so
replacing a checked file or folder with a symlink between check and use opens nothing outside.
Files are read from the descriptor that was checked (:meth:`ReadableFile.open`) and written
relative to a descriptor of the checked directory (:class:`OutputDirectory`).

Hard links: a file with more than one name (``st_nlink > 1``) is refused for reading. Its other
names cannot be seen from here and may lie outside the roots (a hard link to ``~/.ssh/id_rsa``
inside the project looks like an ordinary file), so the policy is: copy it instead.

Nothing here reads the environment; the config builds the policies. Suggested settings:
``FAL_MCP_ALLOWED_DIRS`` (``os.pathsep``-separated extra roots), ``FAL_MCP_ALLOW_DOTFILES``,
``FAL_MCP_MAX_UPLOAD_BYTES`` (→ ``max_read_bytes``), ``FAL_MCP_MAX_DOWNLOAD_BYTES``
(→ ``max_write_bytes``).
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterable, Iterator
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
_TRAILING_SEPARATOR = re.compile(r"[/\\]\.{0,2}$")  # "ok.txt/" or "ok.txt/." names a directory, not ok.txt
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
STAGING_PREFIX = ".fal-mcp-partial-"  # hidden files being written; they get their real name when complete
_HAS_DIR_FD = hasattr(os, "O_DIRECTORY") and {os.open, os.mkdir, os.unlink} <= os.supports_dir_fd


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
    root: Path  # the allowed root the file is reached from, one component at a time
    mtime_ns: int = 0

    def open(self) -> BinaryIO:
        """Open for reading, refusing if the file was swapped or grew past the cap since it was checked.

        The file is reached from its root without following any link, then identified by device and
        inode on the descriptor: a swap of the file or of any folder above it opens nothing else.
        ``O_NONBLOCK`` keeps a swapped-in FIFO from hanging the open. Read only from the returned
        handle (its size may have changed; the upload reads ``fstat``'s size and no more).
        """
        fd = _open_file(self.root, self.path, str(self.path))
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


class OutputDirectory:
    """A checked directory held open: every file is created relative to its descriptor, never by path.

    Replacing the directory (or a folder above it) with a symlink while outputs are being saved
    cannot redirect a single file, and :meth:`create` reports where the file really is. This is the
    one way tools write files; open it with :func:`open_output_dir` and use it as a context manager.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self._path = path
        self._fd = fd  # None only where the OS lacks openat (then paths are used, as a last resort)

    @property
    def path(self) -> Path:
        """Where the directory really is now (it may have been moved since it was opened)."""
        if self._fd is not None:
            for probe in (f"/proc/self/fd/{self._fd}", f"/dev/fd/{self._fd}"):
                try:
                    target = os.readlink(probe)
                except OSError:
                    continue
                if target.startswith("/") and not target.endswith(" (deleted)"):
                    return Path(target)
        return self._path

    def create(self, file_name: str) -> tuple[Path, BinaryIO]:
        """A new file named after ``file_name`` (sanitised), never overwriting anything.

        If the name is taken, ``-1``, ``-2``… go before the extension. Creation is exclusive and does
        not follow links (``O_CREAT | O_EXCL | O_NOFOLLOW``), so a planted symlink or a concurrent
        writer cannot make us write elsewhere. Returns the file's real path and the open file.
        """
        clean = sanitize_file_name(file_name)
        stem, dot, ext = clean.rpartition(".")
        if not dot:
            stem, ext = clean, ""
        suffix = f".{ext}" if ext else ""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        for attempt in range(_MAX_COLLISIONS):
            candidate = clean if attempt == 0 else f"{stem}-{attempt}{suffix}"
            try:
                fd = os.open(self._at(candidate), flags, 0o644, dir_fd=self._fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise GuardError(f"could not create {candidate} in {self.path}: {_os_reason(exc)}.") from None
            return self.path / candidate, os.fdopen(fd, "wb")
        raise GuardError(f"{self.path} already holds too many files named like {clean}. Choose another name or folder.")

    def stage(self) -> tuple[str, BinaryIO]:
        """A new hidden file to fill before it gets its real name with :meth:`publish` (or :meth:`replace`)."""
        name = f"{STAGING_PREFIX}{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        fd = os.open(self._at(name), flags, 0o644, dir_fd=self._fd)
        return name, os.fdopen(fd, "wb")

    def publish(self, staged: str, file_name: str) -> Path:
        """Give a complete staged file its name (as :meth:`create` picks it: never overwriting); its real path.

        The name is reserved exclusively first, then the staged file is renamed over the empty
        reservation, so the name never shows a half-written file.
        """
        path, reservation = self.create(file_name)
        reservation.close()
        self.replace(staged, path.name)
        return path

    def replace(self, staged: str, name: str) -> None:
        """Atomically put a staged file in place of ``name`` (a link there is replaced, never followed)."""
        os.replace(self._at(staged), self._at(name), src_dir_fd=self._fd, dst_dir_fd=self._fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the directory, across processes, for a read-modify-write of a shared file."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; writes stay atomic, concurrent updates may lose one
            yield
            return
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def open_read(self, name: str) -> BinaryIO:
        """Read a file this directory holds, refusing a link in its place."""
        return os.fdopen(os.open(self._at(name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=self._fd), "rb")

    def remove(self, name: str) -> None:
        """Delete a file this directory holds (e.g. a half-written output); a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._at(name), dir_fd=self._fd)

    def _at(self, name: str) -> str | Path:
        if "/" in name or name in ("", ".", ".."):
            raise GuardError(f"{name!r} is not a plain file name.")
        return name if self._fd is not None else self._path / name

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> OutputDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- roots


def roots_from(client_roots: Iterable[str] | None, cwd: Path | None, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The allowed roots: the client's ``file://`` roots if it offers any (else ``cwd``, if given), plus ``extra``.

    Each is resolved (symlinks followed, so containment checks compare real paths), kept only if it
    is an existing directory, and de-duplicated in order. Non-``file`` URIs and remote hosts are ignored.
    """
    from_client = [path for uri in client_roots or () if (path := _file_uri_path(uri)) is not None]
    candidates = [*(from_client or ([cwd] if cwd is not None else [])), *extra]
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
    if _TRAILING_SEPARATOR.search(raw):
        raise GuardError(
            f"{raw} is refused: it ends with a path separator, so it names a directory. "
            "Pass the file's path without it."
        )
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
    root = _check_inside(policy, resolved, raw, action="read")
    _check_dotfiles(policy, given, resolved)
    try:
        st = os.lstat(resolved)  # the real path: a link here means it was swapped since the resolve
    except OSError as exc:
        raise GuardError(f"{raw} cannot be read: {_os_reason(exc)}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise GuardError(
            f"{raw} is refused: it is {_file_kind(st.st_mode)}, not a regular file. Pass the path of a regular file."
        )
    fd = _open_file(root, resolved, raw)
    try:
        opened = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        raise GuardError(f"{raw} is refused: it changed while being checked. Pass the path again.")
    if opened.st_nlink > 1:
        raise GuardError(
            f"{raw} is refused: it has {opened.st_nlink} hard links, and their other names may lie outside the "
            "allowed directories. Copy the file (cp, not ln) into the project and pass the copy."
        )
    if opened.st_size > policy.max_read_bytes:
        raise GuardError(_too_large(Path(raw), opened.st_size, policy.max_read_bytes))
    mime_type, _ = mimetypes.guess_type(resolved.name)
    return ReadableFile(
        path=resolved,
        size=opened.st_size,
        mime_type=mime_type or "application/octet-stream",
        name=resolved.name,
        device=opened.st_dev,
        inode=opened.st_ino,
        max_bytes=policy.max_read_bytes,
        root=root,
        mtime_ns=opened.st_mtime_ns,
    )


# --------------------------------------------------------------------------- writing


def open_output_dir(policy: FilePolicy, raw: str, base: Path, create: bool = True) -> OutputDirectory:
    """Check (and by default create) a directory a tool was asked to write into, and hold it open.

    Every folder below the allowed root is opened (or created) one at a time from the root's
    descriptor without following links, so the descriptor returned is the checked directory even if
    the path is swapped for a symlink a moment later.
    """
    given = _absolute(raw, base)
    # Non-strict resolve follows every link in the existing prefix and applies ".." in order, so
    # the path we check is the path the kernel would use.
    resolved = _resolve_loose(given, raw)
    root = _check_inside(policy, resolved, raw, action="write to")
    _check_dotfiles(policy, given, resolved)
    try:
        fd = _open_dir_beneath(root, resolved.relative_to(root).parts, create=create)
    except FileNotFoundError:
        raise GuardError(f"{raw} does not exist. Create it first or choose an existing directory.") from None
    except (NotADirectoryError, FileExistsError):
        raise GuardError(f"{raw} is refused: it exists and is not a directory. Choose a directory.") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GuardError(
                f"{raw} is refused: a folder on its path was replaced by a link while it was checked. Pass it again."
            ) from None
        raise GuardError(f"{raw} could not be {'created' if create else 'opened'}: {_os_reason(exc)}.") from None
    directory = OutputDirectory(resolved, fd)
    try:
        real = directory.path
        _check_inside(policy, real, raw, action="write to")
        _check_dotfiles(policy, given, real)
    except BaseException:
        directory.close()
        raise
    return directory


def resolve_writable_dir(policy: FilePolicy, raw: str, base: Path, create: bool = True) -> Path:
    """Check (and by default create) a directory a tool may write into; returns its real path.

    A check only: write through :func:`open_output_dir`, never by joining this path.
    """
    with open_output_dir(policy, raw, base, create=create) as directory:
        return directory.path


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


def _check_inside(policy: FilePolicy, resolved: Path, raw: str, action: str) -> Path:
    """The deepest allowed root holding ``resolved``; refuses a path inside none of them."""
    holding = [root for root in policy.roots if resolved.is_relative_to(root)]
    if holding:
        return max(holding, key=lambda root: len(root.parts))
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


def _open_dir_beneath(root: Path, parts: tuple[str, ...], *, create: bool = False) -> int | None:
    """A descriptor of ``root/parts…``, each folder opened from the one above without following links.

    ``None`` where the OS has no ``openat`` (callers then fall back to paths).
    """
    if not _HAS_DIR_FD:
        path = root.joinpath(*parts)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        return None
    flags = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
    fd = os.open(root, flags)
    try:
        for part in parts:
            try:
                below = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                below = os.open(part, flags, dir_fd=fd)
            except OSError:
                # O_NOFOLLOW | O_DIRECTORY on a link fails with ENOTDIR or ELOOP: say which it was.
                if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                    raise OSError(errno.ELOOP, "a folder on the path is a symbolic link", part) from None
                raise
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(root: Path, path: Path, raw: str) -> int:
    """Open the regular file ``path`` (a real path below ``root``) for reading, following no link on the way."""
    parts = path.relative_to(root).parts
    flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
    try:
        parent = _open_dir_beneath(root, parts[:-1])
        try:
            return os.open(parts[-1] if parent is not None else path, flags, dir_fd=parent)
        finally:
            if parent is not None:
                os.close(parent)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise GuardError(f"{raw} is refused: this process has no permission to read it.") from None
        raise GuardError(
            f"{raw} could not be opened ({_os_reason(exc)}). "
            "It may have been replaced by a link or removed after it was checked; pass the path again."
        ) from None


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
