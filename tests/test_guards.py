"""File and URL guards: every refusal with its message, and real fetches over loopback HTTP."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from fal_mcp.fal.hosts import FalHosts
from fal_mcp.guards import (
    FilePolicy,
    GuardError,
    open_output_dir,
    resolve_readable,
    resolve_writable_dir,
    roots_from,
    sanitize_file_name,
)
from fal_mcp.server import netguard
from fal_mcp.server.netguard import (
    FetchError,
    UrlPolicy,
    check_url,
    fetch_bytes,
    fetch_to_temp,
    fetch_url,
    guarded_client,
    url_policy_for,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

# --------------------------------------------------------------------------- file fixtures


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "cat.png").write_bytes(PNG)
    (tmp_path / "outside.txt").write_text("secret")
    return root


@pytest.fixture
def policy(project: Path) -> FilePolicy:
    return FilePolicy(roots=roots_from(None, project, []))


def refused(policy: FilePolicy, raw: str, base: Path) -> str:
    with pytest.raises(GuardError) as info:
        resolve_readable(policy, raw, base)
    return info.value.message


# --------------------------------------------------------------------------- roots


def test_roots_from_client_file_uris_with_spaces(tmp_path: Path) -> None:
    spaced = tmp_path / "my project"
    spaced.mkdir()
    extra = tmp_path / "extra"
    extra.mkdir()
    uris = [
        "file://" + quote(str(spaced)),
        "https://example.com/not-a-file-root",
        "file://otherhost/remote",
        "file://" + quote(str(tmp_path / "missing")),
        "file://localhost" + quote(str(spaced)),
    ]
    assert roots_from(uris, cwd=tmp_path, extra=[extra]) == (spaced, extra)


def test_roots_fall_back_to_cwd_and_resolve_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert roots_from(None, tmp_path / "link", []) == (real,)
    assert roots_from(["https://only.remote/"], tmp_path / "link", [real]) == (real,)


def test_no_roots_refuses_everything(project: Path) -> None:
    message = refused(FilePolicy(roots=()), "cat.png", project)
    assert "no directory is allowed" in message


# --------------------------------------------------------------------------- reading


def test_readable_file_inside_root(policy: FilePolicy, project: Path) -> None:
    checked = resolve_readable(policy, "cat.png", project)
    assert checked.path == project / "cat.png"
    assert (checked.size, checked.mime_type, checked.name) == (len(PNG), "image/png", "cat.png")
    with checked.open() as handle:
        assert handle.read() == PNG
    assert resolve_readable(policy, str(project / "cat.png"), Path("/")).path == project / "cat.png"
    (project / "blob.weird-ext").write_bytes(b"x")
    assert resolve_readable(policy, "blob.weird-ext", project).mime_type == "application/octet-stream"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.txt").write_text("hi")
    policy = FilePolicy(roots=roots_from(None, tmp_path, []))
    assert resolve_readable(policy, "~/a.txt", Path("/")).path == tmp_path / "a.txt"


def test_traversal_and_outside_paths_refused(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    message = refused(policy, "../outside.txt", project)
    assert "only read files inside the allowed directories" in message
    assert str(project) in message
    assert f"resolves to {tmp_path / 'outside.txt'}" in message
    assert "FAL_MCP_ALLOWED_DIRS" in message
    assert "allowed directories" in refused(policy, "sub/../../outside.txt", project)
    assert "allowed directories" in refused(policy, str(tmp_path / "outside.txt"), project)
    assert "allowed directories" in refused(policy, "/etc/passwd", project)
    # A missing file outside gets the same answer as an existing one: no existence oracle.
    assert "allowed directories" in refused(policy, str(tmp_path / "nope.txt"), project)


def test_symlinks_out_refused_and_in_allowed(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    (project / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (project / "escape-dir").symlink_to(tmp_path)
    (project / "alias.png").symlink_to(project / "cat.png")
    assert "allowed directories" in refused(policy, "escape.txt", project)
    assert "allowed directories" in refused(policy, "escape-dir/outside.txt", project)
    checked = resolve_readable(policy, "alias.png", project)
    assert checked.path == project / "cat.png"


def test_dotfiles_and_dot_directories_refused(policy: FilePolicy, project: Path) -> None:
    (project / ".env").write_text("FAL_KEY=x")
    (project / ".ssh").mkdir()
    (project / ".ssh" / "id_rsa").write_text("key")
    (project / "sub" / ".git").mkdir()
    (project / "sub" / ".git" / "config").write_text("[core]")
    (project / "notes.txt").symlink_to(project / ".env")  # refused as resolved
    (project / ".alias.png").symlink_to(project / "cat.png")  # refused as given
    for raw in (".env", ".ssh/id_rsa", "sub/.git/config", "notes.txt", ".alias.png", "sub/../.env"):
        message = refused(policy, raw, project)
        assert "dotfiles and dot-directories" in message, raw
        assert "FAL_MCP_ALLOW_DOTFILES=1" in message
    # Below-root check only: a root that itself lives in a dot-directory is fine.
    hidden_root = project / ".cache" / "work"
    hidden_root.mkdir(parents=True)
    (hidden_root / "ok.txt").write_text("ok")
    inner = FilePolicy(roots=roots_from(None, hidden_root, []))
    assert resolve_readable(inner, "ok.txt", hidden_root).name == "ok.txt"


def test_dotfiles_allowed_when_enabled(project: Path) -> None:
    (project / ".ssh").mkdir()
    (project / ".ssh" / "id_rsa").write_text("key")
    (project / ".env").write_text("A=1")
    policy = FilePolicy(roots=roots_from(None, project, []), allow_dotfiles=True)
    assert resolve_readable(policy, ".ssh/id_rsa", project).size == 3
    assert resolve_readable(policy, ".env", project).name == ".env"


def test_special_files_refused(policy: FilePolicy, project: Path) -> None:
    os.mkfifo(project / "pipe")
    assert "a FIFO (named pipe), not a regular file" in refused(policy, "pipe", project)
    assert "a directory, not a regular file" in refused(policy, "sub", project)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(project / "s.sock"))
        assert "a socket, not a regular file" in refused(policy, "s.sock", project)
    finally:
        server.close()
    dev = FilePolicy(roots=roots_from(None, Path("/dev"), []))
    assert "a character device, not a regular file" in refused(dev, "null", Path("/dev"))
    # A link to a device from inside the root is refused before its kind matters.
    (project / "null").symlink_to("/dev/null")
    assert "allowed directories" in refused(policy, "null", project)


def test_too_large_and_missing_refused(project: Path) -> None:
    policy = FilePolicy(roots=roots_from(None, project, []), max_read_bytes=1024)
    with open(project / "huge.bin", "wb") as handle:
        handle.truncate(1025)
    message = refused(policy, "huge.bin", project)
    assert "it is 1.0 KiB, over the 1.0 KiB limit" in message
    assert "FAL_MCP_MAX_UPLOAD_BYTES" in message
    with open(project / "huge.bin", "wb") as handle:
        handle.truncate(5 * 1024 * 1024 * 1024)
    assert "5.0 GiB" in refused(policy, "huge.bin", project)
    message = refused(policy, "nope.png", project)
    assert "nope.png was not found" in message and str(project) in message
    assert "NUL byte" in refused(policy, "a\x00b", project)
    assert "empty path" in refused(policy, "", project)


def test_open_refuses_a_file_swapped_after_the_check(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    # Each swap builds the replacement beside the original and renames it over, as an attacker
    # would, so the replacement cannot reuse the checked inode.
    checked = resolve_readable(policy, "cat.png", project)
    (project / "cat.new").write_bytes(b"other")
    os.replace(project / "cat.new", project / "cat.png")
    with pytest.raises(GuardError, match="changed while being checked"):
        checked.open()

    checked = resolve_readable(policy, "cat.png", project)
    (project / "cat.new").symlink_to(tmp_path / "outside.txt")
    os.replace(project / "cat.new", project / "cat.png")
    with pytest.raises(GuardError, match="could not be opened"):
        checked.open()

    (project / "cat.png").unlink()
    (project / "cat.png").write_bytes(PNG)
    checked = resolve_readable(policy, "cat.png", project)
    os.mkfifo(project / "cat.new")
    os.replace(project / "cat.new", project / "cat.png")
    with pytest.raises(GuardError, match="changed while being checked"):
        checked.open()


def test_open_refuses_a_file_grown_past_the_cap(project: Path) -> None:
    policy = FilePolicy(roots=roots_from(None, project, []), max_read_bytes=2048)
    checked = resolve_readable(policy, "cat.png", project)
    with open(project / "cat.png", "ab") as handle:
        handle.write(b"x" * 2048)
    with pytest.raises(GuardError, match=r"over the 2\.0 KiB limit"):
        checked.open()


def test_folder_above_the_file_swapped_for_a_link_is_refused(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    """issue 9 #3: a folder above the checked file becomes a link to a folder holding a file of the same
    name outside the root. The open walks from the root without following links: refused."""
    (project / "sub" / "id_rsa").write_bytes(b"harmless")
    checked = resolve_readable(policy, "sub/id_rsa", project)
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "id_rsa").write_bytes(b"SECRET")
    os.rename(project / "sub", project / "sub-old")
    (project / "sub").symlink_to(secret_dir)
    with pytest.raises(GuardError, match="could not be opened"):
        checked.open()


def test_hard_links_refused(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    """issue 9 #17: a hard link inside the root to a file outside it is not an ordinary file: refused."""
    os.link(tmp_path / "outside.txt", project / "innocent.txt")
    message = refused(policy, "innocent.txt", project)
    assert "2 hard links" in message and "Copy the file" in message


def test_trailing_separator_is_not_the_file(policy: FilePolicy, project: Path) -> None:
    """issue 9 #17: ``ok.txt/`` names a directory; it must not read as ``ok.txt``."""
    (project / "ok.txt").write_text("ok")
    for raw in ("ok.txt/", "ok.txt/.", str(project / "ok.txt") + "/"):
        assert "ends with a path separator" in refused(policy, raw, project), raw
    assert resolve_readable(policy, "ok.txt", project).size == 2


# --------------------------------------------------------------------------- writing


def test_writable_dir_created_inside(policy: FilePolicy, project: Path) -> None:
    made = resolve_writable_dir(policy, "out/images", project)
    assert made == project / "out" / "images" and made.is_dir()
    assert resolve_writable_dir(policy, "out/images", project) == made
    assert resolve_writable_dir(policy, str(project), Path("/")) == project


def test_writable_dir_refusals(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    with pytest.raises(GuardError, match="only write to files inside the allowed directories"):
        resolve_writable_dir(policy, "../elsewhere", project)
    assert not (tmp_path / "elsewhere").exists()
    (project / "link-out").symlink_to(tmp_path)
    with pytest.raises(GuardError, match="allowed directories"):
        resolve_writable_dir(policy, "link-out/new", project)
    assert not (tmp_path / "new").exists()
    with pytest.raises(GuardError, match="dotfiles and dot-directories"):
        resolve_writable_dir(policy, ".cache/x", project)
    assert not (project / ".cache").exists()
    with pytest.raises(GuardError, match="exists and is not a directory"):
        resolve_writable_dir(policy, "cat.png", project)
    with pytest.raises(GuardError, match="does not exist"):
        resolve_writable_dir(policy, "later", project, create=False)
    assert not (project / "later").exists()


def test_sanitize_file_name() -> None:
    assert sanitize_file_name("../../evil.png") == "evil.png"
    assert sanitize_file_name("..\\..\\win.png") == "win.png"
    assert sanitize_file_name(".bashrc") == "bashrc"
    assert sanitize_file_name(". .hidden") == "hidden"
    assert sanitize_file_name("a\x00b\x1b[31m\u202ec.png") == "ab[31mc.png"
    assert sanitize_file_name('what?<is>:"this".jpg') == "what__is___this_.jpg"
    assert sanitize_file_name("") == "output"
    assert sanitize_file_name("...") == "output"
    assert sanitize_file_name("CON.txt") == "_CON.txt"
    long = sanitize_file_name("é" * 300 + ".webp")
    assert long.endswith(".webp") and len(long.encode()) <= 180
    assert sanitize_file_name("archive.tar.gz") == "archive.tar.gz"


def test_output_directory_never_overwrites(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    out = project / "out"
    with open_output_dir(policy, "out", project) as directory:
        paths = []
        for _ in range(3):
            path, handle = directory.create("cat.png")
            with handle:
                handle.write(path.name.encode())
            paths.append(path)
        assert [p.name for p in paths] == ["cat.png", "cat-1.png", "cat-2.png"]
        assert (out / "cat.png").read_bytes() == b"cat.png"

        path, handle = directory.create("../../evil.png")
        handle.close()
        assert path == out / "evil.png"
        path, handle = directory.create(".bashrc")
        handle.close()
        assert path == out / "bashrc"

        # A planted link is never written through.
        (out / "planted.png").symlink_to(tmp_path / "outside.txt")
        path, handle = directory.create("planted.png")
        with handle:
            handle.write(b"new")
        assert path == out / "planted-1.png"
        assert (tmp_path / "outside.txt").read_text() == "secret"
        directory.remove("planted-1.png")
        assert not (out / "planted-1.png").exists()


def test_output_directory_swapped_for_a_link_mid_download(policy: FilePolicy, project: Path, tmp_path: Path) -> None:
    """issue 9 #4: after the checked folder (or a folder above it) becomes a symlink out of the root,
    later files still land in the folder that was checked, and their reported path is where they are."""
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    with open_output_dir(policy, "renders/today", project) as directory:
        first, handle = directory.create("a.png")
        handle.close()
        assert first == project / "renders" / "today" / "a.png"
        os.rename(project / "renders", project / "renders-moved")
        (project / "renders").symlink_to(outside)
        (outside / "today").mkdir()
        second, handle = directory.create("b.png")
        with handle:
            handle.write(b"data")
    assert list(outside.rglob("*")) == [outside / "today"]
    assert second == project / "renders-moved" / "today" / "b.png" and second.read_bytes() == b"data"
    # Opening the swapped path now is refused: it resolves outside the root.
    with pytest.raises(GuardError, match="allowed directories"):
        open_output_dir(policy, "renders/today", project)


def test_output_dir_walk_refuses_a_link_planted_between_check_and_open(
    policy: FilePolicy, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is swapped for a link after the path was checked but before it is opened: refused."""
    from fal_mcp import guards

    (project / "out").mkdir()
    real_resolve = guards._resolve_loose

    def resolve_then_swap(path: Path, raw: str) -> Path:
        resolved = real_resolve(path, raw)
        os.rename(project / "out", project / "out-old")
        (project / "out").symlink_to(tmp_path)
        return resolved

    monkeypatch.setattr(guards, "_resolve_loose", resolve_then_swap)
    with pytest.raises(GuardError, match="replaced by a link"):
        open_output_dir(policy, "out", project)


# --------------------------------------------------------------------------- URL checks (no traffic)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "only http://, https:// URLs"),
        ("ftp://example.com/a.png", "only http://, https:// URLs"),
        ("javascript:alert(1)", "only http://, https:// URLs"),
        ("http:///nohost", "no host name"),
        ("http://1.2.3.256/", "not a valid URL"),
        ("http://0x1.0x100.1.1/", "not a valid one"),
        ("http://localhost/", "localhost resolves to"),
        ("http://127.0.0.1/", "loopback addresses"),
        ("http://127.8.9.10:8080/x", "loopback addresses"),
        ("http://[::1]/", "loopback addresses"),
        ("http://0.0.0.0/", "unspecified addresses"),
        ("http://169.254.169.254/latest/meta-data/", "link-local addresses"),
        ("http://[fe80::1]/", "link-local addresses"),
        ("http://10.0.0.1/", "private addresses"),
        ("http://172.16.5.4/", "private addresses"),
        ("http://192.168.1.1/", "private addresses"),
        ("http://[fc00::1]/", "private addresses"),
        ("http://100.64.0.1/", "shared (CGNAT) addresses"),
        ("http://224.0.0.1/", "multicast addresses"),
        ("http://240.0.0.1/", "reserved addresses"),
        ("http://2130706433/", "loopback addresses"),
        ("http://0x7f.1/", "0x7f.1 (127.0.0.1) is refused: loopback addresses"),
        ("http://017700000001/", "loopback addresses"),
        ("http://0177.0.0.1/", "not a valid URL"),  # httpx2 itself rejects octal dotted quads
        ("http://0x7f.0.0.1/", "loopback addresses"),
        ("http://[::ffff:127.0.0.1]/", "loopback addresses"),
        ("http://[::ffff:a9fe:a9fe]/", "link-local addresses"),
        ("http://[2002:7f00:1::]/", "loopback addresses"),
        ("http://[64:ff9b::a00:1]/", "private addresses"),
    ],
)
async def test_check_url_refusals(url: str, fragment: str) -> None:
    with pytest.raises(GuardError) as info:
        await check_url(UrlPolicy(), url)
    assert fragment in info.value.message
    if "addresses" in fragment:
        assert "FAL_MCP_ALLOW_PRIVATE_URLS=1" in info.value.message


@pytest.mark.anyio
async def test_check_url_refuses_credentials_without_echoing_them() -> None:
    for url in ("http://user:hunter2@example.com/a.png", "ftp://user:hunter2@example.com/"):
        with pytest.raises(GuardError) as info:
            await check_url(UrlPolicy(), url)
        assert "hunter2" not in info.value.message


@pytest.mark.anyio
async def test_check_url_allows_public_and_opt_ins() -> None:
    # Literal public addresses need no resolution, so these send nothing anywhere.
    for url in ("https://8.8.8.8/a.png", "http://[2606:4700::1111]/", "http://[64:ff9b::808:808]/"):
        await check_url(UrlPolicy(), url)
    opened = UrlPolicy(allow_private=True)
    for url in ("http://127.0.0.1/", "http://localhost:1/", "http://169.254.169.254/", "http://[::1]/"):
        await check_url(opened, url)
    with pytest.raises(GuardError, match="only http"):
        await check_url(opened, "file:///etc/passwd")
    await check_url(UrlPolicy(allowed_hosts=frozenset({"LocalHost."})), "http://localhost:9/")
    with pytest.raises(GuardError, match="loopback"):
        await check_url(UrlPolicy(allowed_hosts=frozenset({"localhost"})), "http://127.0.0.1/")


# --------------------------------------------------------------------------- real fetches over loopback


class Site:
    """A tiny HTTP server on 127.0.0.1 that counts hits per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        async def counted(request: Request) -> Response:
            self.hits[request.url.path] = self.hits.get(request.url.path, 0) + 1
            return await handlers[request.url.path.split("/")[1]](request)

        async def image(request: Request) -> Response:
            return Response(PNG, media_type="image/png")

        async def named(request: Request) -> Response:
            disposition = "attachment; filename*=UTF-8''caf%C3%A9%20menu.txt"
            return Response(b"menu", media_type="text/plain", headers={"Content-Disposition": disposition})

        async def to_localhost(request: Request) -> Response:
            return RedirectResponse(f"http://localhost:{self.port}/secret", status_code=302)

        async def secret(request: Request) -> Response:
            return Response(b"internal only")

        async def chain(request: Request) -> Response:
            left = int(request.url.path.split("/")[2])
            if left == 0:
                return Response(PNG, media_type="application/octet-stream")
            return RedirectResponse(f"/chain/{left - 1}/pic.png", status_code=307)

        async def chunked(request: Request) -> Response:
            async def body() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"x" * 1000

            return StreamingResponse(body(), media_type="application/octet-stream")

        async def declared(request: Request) -> Response:
            return Response(b"y" * 2000, media_type="application/octet-stream")

        async def missing(request: Request) -> Response:
            return Response(b"gone", status_code=404)

        handlers = {
            "image.png": image,
            "named": named,
            "to-localhost": to_localhost,
            "secret": secret,
            "chain": chain,
            "chunked": chunked,
            "declared": declared,
            "missing": missing,
        }
        return Starlette(routes=[Route("/{path:path}", counted)])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    site = Site()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    site.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(site.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    yield site
    server.should_exit = True
    thread.join(10)
    sock.close()


LOCAL = UrlPolicy(allowed_hosts=frozenset({"127.0.0.1"}))


@pytest.mark.anyio
async def test_fetch_into_memory_and_file(site: Site, project: Path) -> None:
    async with guarded_client(LOCAL) as client:
        fetched = await fetch_url(LOCAL, client, f"{site.base}/image.png")
        assert (fetched.content, fetched.size) == (PNG, len(PNG))
        assert (fetched.content_type, fetched.file_name) == ("image/png", "image.png")

        with open_output_dir(FilePolicy(roots=(project,)), str(project), project) as directory:
            path, handle = directory.create("named")
            with handle:
                fetched = await fetch_url(LOCAL, client, f"{site.base}/named", handle)
        assert fetched.content is None and path.read_bytes() == b"menu"
        assert (fetched.file_name, fetched.content_type) == ("café menu.txt", "text/plain")


@pytest.mark.anyio
async def test_redirects_followed_and_rechecked(site: Site) -> None:
    async with guarded_client(LOCAL) as client:
        fetched = await fetch_url(LOCAL, client, f"{site.base}/chain/2/start")
        assert fetched.url == f"{site.base}/chain/0/pic.png"
        assert (fetched.file_name, fetched.content_type, fetched.content) == ("pic.png", "image/png", PNG)

        with pytest.raises(GuardError, match="redirected more than 3 times"):
            few = UrlPolicy(allowed_hosts=LOCAL.allowed_hosts, max_redirects=3)
            await fetch_url(few, client, f"{site.base}/chain/9/x")

        before = site.hits.get("/secret", 0)
        with pytest.raises(GuardError) as info:
            await fetch_url(LOCAL, client, f"{site.base}/to-localhost")
        assert "localhost resolves to" in info.value.message and "loopback" in info.value.message
        assert site.hits["/to-localhost"] >= 1
        assert site.hits.get("/secret", 0) == before


@pytest.mark.anyio
async def test_redirect_recheck_holds_even_with_a_plain_client(site: Site) -> None:
    """The per-hop ``check_url`` alone stops a redirect to a refused host (no guarded transport here)."""
    before = site.hits.get("/secret", 0)
    async with httpx2.AsyncClient(trust_env=False) as plain:
        with pytest.raises(GuardError, match="localhost resolves to"):
            await fetch_url(LOCAL, plain, f"{site.base}/to-localhost")
    assert site.hits.get("/secret", 0) == before


@pytest.mark.anyio
async def test_size_cap_streamed_and_declared(site: Site) -> None:
    small = UrlPolicy(allowed_hosts=LOCAL.allowed_hosts, max_bytes=1500)
    async with guarded_client(small) as client:
        response = await client.get(f"{site.base}/chunked")
        assert "content-length" not in response.headers and len(response.content) == 4000
        with pytest.raises(GuardError, match="is more than that, over the 1500 byte limit"):
            await fetch_url(small, client, f"{site.base}/chunked")
        with pytest.raises(GuardError, match="is 2000 bytes, over the 1500 byte limit"):
            await fetch_url(small, client, f"{site.base}/declared")


@pytest.mark.anyio
async def test_http_error_is_a_fetch_error(site: Site) -> None:
    async with guarded_client(LOCAL) as client:
        with pytest.raises(FetchError, match="answered HTTP 404"):
            await fetch_url(LOCAL, client, f"{site.base}/missing")


@pytest.mark.anyio
async def test_transport_refuses_private_peers_without_the_precheck(site: Site) -> None:
    """The guarded transport checks what it connects to, even when ``check_url`` was never called."""
    before = site.hits.get("/secret", 0)
    async with guarded_client(UrlPolicy()) as client:
        with pytest.raises(GuardError, match="loopback addresses"):
            await client.get(f"{site.base}/secret")
        with pytest.raises(GuardError, match=r"localhost resolves to (127\.0\.0\.1|::1)"):
            await client.get(f"http://localhost:{site.port}/secret")
    assert site.hits.get("/secret", 0) == before


@pytest.mark.anyio
async def test_dns_rebinding_refused_at_connect(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is public when checked and loopback when connecting: the connection is refused.

    The first (public) answer is only ever checked, never connected to. The name is ``localhost``
    so that even a broken guard falling back to the system resolver would reach the local site
    (and fail the test), never anything else.
    """
    answers: list[str] = []

    async def staged(host: str, port: int) -> list[str]:
        answer = "93.184.215.14" if not answers else "127.0.0.1"
        answers.append(answer)
        return [answer]

    monkeypatch.setattr(netguard, "_resolve", staged)
    before = site.hits.get("/image.png", 0)
    async with guarded_client(UrlPolicy()) as client:
        with pytest.raises(GuardError) as info:
            await fetch_url(UrlPolicy(), client, f"http://localhost:{site.port}/image.png")
    assert answers == ["93.184.215.14", "127.0.0.1"]
    assert "localhost resolves to 127.0.0.1, which is refused: loopback" in info.value.message
    assert site.hits.get("/image.png", 0) == before


@pytest.mark.anyio
async def test_fal_origins_exempt_only_their_port(site: Site) -> None:
    settings = SimpleNamespace(allow_private_urls=False)
    policy = url_policy_for(settings, FalHosts.for_base_url(site.base), max_bytes=10_000)
    assert policy.allowed_hosts == frozenset({f"127.0.0.1:{site.port}"})
    async with guarded_client(policy) as client:
        assert await fetch_bytes(policy, client, f"{site.base}/image.png") == PNG
    with pytest.raises(GuardError, match="loopback"):
        await check_url(policy, f"http://127.0.0.1:{site.port + 1}/")
    assert url_policy_for(settings, None, max_bytes=1).allowed_hosts == frozenset()
    assert url_policy_for(SimpleNamespace(allow_private_urls=True), None, max_bytes=1).allow_private
    ipv6 = UrlPolicy(allowed_hosts=frozenset({"[::1]:8790"}))
    await check_url(ipv6, "http://[::1]:8790/")
    with pytest.raises(GuardError, match="loopback"):
        await check_url(ipv6, "http://[::1]:8791/")


@pytest.mark.anyio
async def test_fetch_to_temp_keeps_the_file_or_nothing(site: Site, tmp_path: Path) -> None:
    async with guarded_client(LOCAL) as client:
        fetched = await fetch_to_temp(LOCAL, client, f"{site.base}/image.png", tmp_path)
        assert fetched.path is not None and fetched.path.parent == tmp_path
        assert fetched.path.read_bytes() == PNG and fetched.file_name == "image.png"
        fetched.path.unlink()
        small = UrlPolicy(allowed_hosts=LOCAL.allowed_hosts, max_bytes=1500)
        with pytest.raises(GuardError, match="over the 1500 byte limit"):
            await fetch_to_temp(small, client, f"{site.base}/chunked", tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_allow_private_fetches_loopback(site: Site) -> None:
    opened = UrlPolicy(allow_private=True)
    async with guarded_client(opened) as client:
        fetched = await fetch_url(opened, client, f"http://localhost:{site.port}/image.png")
    assert fetched.content == PNG
