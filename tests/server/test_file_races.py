"""Races on local files through the real tools (issue 9 #3, #4, #16): what was checked is what is used.

Each attack swaps a real file or folder at the moment the server is busy elsewhere (fetching its CDN
token, downloading an output), which is when the adversarial run won its races, or right after the file
guard's check (:func:`after_check`: the exact check-then-use window the old code lost, whatever the tool
does in between). The swap is triggered from inside that step, so the race is hit every time and the test
takes no sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from PIL import Image

from fal_mcp import guards
from fal_mcp.config import Settings
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.fal.storage import StorageAPI
from fal_mcp.server import netguard
from tests.server.conftest import make_server
from tests.server.helpers import call, error_of, structured, text_of
from tests.server.test_jobs import submissions

pytestmark = pytest.mark.anyio

ORIGINAL = b"\x89PNG\r\n\x1a\n checked picture"
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for upload"


def on_token(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[int]:
    """Run ``action`` (the attacker's move) each time the server fetches its CDN token, then carry on."""
    fired: list[int] = []
    real = StorageAPI.token

    async def token(self: StorageAPI, *, stale: Any = None) -> Any:
        if not fired:
            action()
        fired.append(1)
        return await real(self, stale=stale)

    monkeypatch.setattr(StorageAPI, "token", token)
    return fired


def swap(path: Path, build: Callable[[Path], None]) -> None:
    """Replace ``path`` atomically with what ``build`` makes beside it (as an attacker would)."""
    beside = path.with_name(path.name + ".new")
    build(beside)
    os.replace(beside, path)


async def fetched(url: str) -> bytes:
    async with httpx2.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def test_upload_swapped_for_a_symlink_to_a_secret_sends_the_checked_file(
    server: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "cat.png").write_bytes(ORIGINAL)
    secret = workdir.parent / "id_ed25519"
    secret.write_bytes(SECRET)
    fired = on_token(monkeypatch, lambda: swap(workdir / "cat.png", lambda p: p.symlink_to(secret)))
    async with Client(server) as client:
        result = await call(client, "upload_file", {"path": "cat.png"})
    assert fired and (workdir / "cat.png").is_symlink()  # the swap happened mid-call
    assert not result.is_error, text_of(result)
    assert await fetched(structured(result)["url"]) == ORIGINAL


def after_check(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[int]:
    """Run ``action`` (the attacker's move) right after the file guard has checked a path, before it is used.

    This is the exact window of the original attack (the checked file was re-opened by name later): the
    swap lands between check and use whatever the tool does in between.
    """
    fired: list[int] = []
    real = guards.resolve_readable

    def check_then_swap(*args: Any, **kwargs: Any) -> Any:
        checked = real(*args, **kwargs)
        if not fired:
            action()
        fired.append(1)
        return checked

    monkeypatch.setattr(guards, "resolve_readable", check_then_swap)
    return fired


def new_cdn_files(emulator: EmulatorServer, before: set[str]) -> list[bytes]:
    """The bytes of every file stored on the emulated CDN since ``before`` (its keys then)."""
    files = emulator.state.files._files
    return [stored.blob.read_bytes() for key, stored in list(files.items()) if key not in before]


SWAPS: dict[str, Callable[[Path, Path], None]] = {
    "symlink": lambda target, secret: swap(target, lambda p: p.symlink_to(secret)),
    "hard-link": lambda target, secret: swap(target, lambda p: os.link(secret, p)),
    "bigger-file": lambda target, _secret: swap(target, lambda p: p.write_bytes(SECRET * 100_000)),
    "folder-link": lambda target, secret: (
        os.rename(target.parent, target.parent.with_name("sub-old")),
        target.parent.symlink_to(secret.parent),
    ),
}


@pytest.mark.parametrize("attack", list(SWAPS))
@pytest.mark.parametrize("tool", ["upload_file", "file-field"])
async def test_a_swap_between_check_and_use_never_sends_anything_but_the_checked_file(
    settings: Settings, workdir: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tool: str, attack: str
) -> None:
    """issue 9 #3: the checked file is replaced (by a symlink or hard link to a secret outside the root, by a
    file over the cap, or a folder above it by a link) between the check and the upload. The call is refused:
    nothing reaches the CDN (the secret least of all), and a model call whose file was swapped is not paid for."""
    target = workdir / "sub" / "pic.png"
    target.parent.mkdir()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(target)
    original = target.read_bytes()
    outside = workdir.parent / "outside"
    outside.mkdir()
    secret = outside / "pic.png"
    secret.write_bytes(SECRET)
    fired = after_check(monkeypatch, lambda: SWAPS[attack](target, secret))
    before = set(emulator.state.files._files)
    endpoint = "fal-ai/flux/dev/image-to-image"
    paid = sum(n for k, n in emulator.state.submissions.items() if k.startswith(endpoint + " "))
    async with Client(make_server(settings, max_upload_bytes=len(original) + 10)) as client:
        if tool == "upload_file":
            result = await call(client, "upload_file", {"path": "sub/pic.png"})
        else:
            data = {"image_url": "./sub/pic.png", "prompt": "make it blue", "strength": 0.5, "seed": 43}
            result = await call(client, "fal_subscribe", {"endpoint_id": endpoint, "input": data})
    assert fired, "the swap did not happen"
    sent = new_cdn_files(emulator, before)
    assert all(SECRET not in body for body in sent), "the secret was uploaded"
    # Refused when the checked descriptor is opened: nothing sent, nothing paid, and said plainly.
    assert error_of(result)["kind"] == "refused", text_of(result)
    assert "pic.png" in text_of(result) and "Traceback" not in text_of(result)
    assert sent == []
    assert sum(n for k, n in emulator.state.submissions.items() if k.startswith(endpoint + " ")) == paid


@pytest.mark.parametrize("tool", ["upload_file", "file-field"])
async def test_a_hard_link_to_a_secret_is_refused_and_nothing_is_sent(
    server: Any, workdir: Path, emulator: EmulatorServer, tool: str
) -> None:
    """issue 9 #17: hard-link policy, end to end. A hard link inside the root to a file outside it looks like an
    ordinary file; any file with more than one name is refused, so nothing reaches the CDN or fal."""
    secret = workdir.parent / "id_ed25519"
    secret.write_bytes(SECRET)
    os.link(secret, workdir / "notes.png")
    before = set(emulator.state.files._files)
    endpoint = "fal-ai/flux/dev/image-to-image"
    paid = sum(n for k, n in emulator.state.submissions.items() if k.startswith(endpoint + " "))
    async with Client(server) as client:
        if tool == "upload_file":
            result = await call(client, "upload_file", {"path": "notes.png"})
        else:
            data = {"image_url": "./notes.png", "prompt": "x", "strength": 0.5, "seed": 44}
            result = await call(client, "fal_subscribe", {"endpoint_id": endpoint, "input": data})
    assert error_of(result)["kind"] == "refused"
    assert "2 hard links" in text_of(result) and "Copy the file" in text_of(result)
    assert new_cdn_files(emulator, before) == []
    assert sum(n for k, n in emulator.state.submissions.items() if k.startswith(endpoint + " ")) == paid


async def test_upload_swapped_for_a_bigger_file_never_exceeds_the_cap(
    settings: Settings, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "small.bin").write_bytes(ORIGINAL)
    on_token(monkeypatch, lambda: swap(workdir / "small.bin", lambda p: p.write_bytes(b"x" * 3_000_000)))
    async with Client(make_server(settings, max_upload_bytes=100)) as client:
        result = await call(client, "upload_file", {"path": "small.bin"})
    assert not result.is_error, text_of(result)
    assert structured(result)["size"] == len(ORIGINAL)
    assert await fetched(structured(result)["url"]) == ORIGINAL


async def test_upload_of_a_file_growing_past_the_cap_fails_without_sending_it(
    settings: Settings, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = workdir / "growing.bin"
    path.write_bytes(ORIGINAL)

    def grow() -> None:
        with open(path, "ab") as handle:
            handle.write(b"x" * 3_000_000)

    on_token(monkeypatch, grow)
    async with Client(make_server(settings, max_upload_bytes=100)) as client:
        result = await call(client, "upload_file", {"path": "growing.bin"})
    assert result.is_error and "grew while it was being uploaded" in text_of(result)


async def test_file_field_upload_sends_the_checked_file(
    server: Any, workdir: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local paths in a model's file fields go through the same checked descriptor."""
    Image.new("RGB", (96, 64), (200, 30, 30)).save(workdir / "cat.png")
    secret = workdir.parent / "secret.png"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(secret)
    fired = on_token(monkeypatch, lambda: swap(workdir / "cat.png", lambda p: p.symlink_to(secret)))
    data = {"image_url": "./cat.png", "prompt": "make it blue", "strength": 0.5, "seed": 41}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev/image-to-image", "input": data})
    assert fired and not result.is_error, text_of(result)
    image = structured(result)["output"]["images"][0]
    assert (image["width"], image["height"]) == (96, 64)  # the checked picture, not the 32x32 secret


async def test_download_dir_swapped_mid_download_keeps_every_file_inside(
    server: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first file is saved the folder becomes a symlink out of the root: the rest still land in
    the folder that was checked, and saved_path says where each file really is."""
    outside = workdir.parent / "elsewhere"
    outside.mkdir()
    real_fetch = netguard.fetch_url
    saved: list[int] = []

    async def fetch_then_swap(*args: Any, **kwargs: Any) -> Any:
        result = await real_fetch(*args, **kwargs)
        if not saved:
            os.rename(workdir / "out", workdir / "out-moved")
            (workdir / "out").symlink_to(outside)
        saved.append(1)
        return result

    monkeypatch.setattr(netguard, "fetch_url", fetch_then_swap)
    data = {"prompt": "two pictures", "seed": 9, "num_images": 2, "image_size": "square"}
    args = {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": "out"}
    async with Client(server) as client:
        result = await call(client, "fal_subscribe", args)
    assert not result.is_error, text_of(result)
    files = structured(result)["files"]
    assert len(files) == 2 and len(saved) >= 2  # (thumbnails fetch too, after saving)
    assert list(outside.iterdir()) == []
    for f in files:
        assert Path(f["saved_path"]).parent == workdir / "out-moved", f["saved_path"]
        assert (await anyio.Path(f["saved_path"]).stat()).st_size == f["size"]


async def test_refused_download_dir_costs_nothing(server: Any, workdir: Path, emulator: EmulatorServer) -> None:
    """issue 9 #16 / issue 10 #2: a download_dir the guard refuses refuses the call before it is paid for."""
    data = {"prompt": "never paid", "seed": 12}
    async with Client(server) as client:
        result = await call(
            client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": "../outside"}
        )
    assert error_of(result)["kind"] == "refused"
    assert submissions(emulator, "fal-ai/flux/dev", data) == 0


async def test_saving_refused_after_the_job_ran_keeps_its_request_id(
    server: Any, workdir: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is fine when checked, then replaced by a link out of the root before saving: the error
    names the paid job's request id and how to get its result."""
    outside = workdir.parent / "elsewhere"
    outside.mkdir()
    from fal_mcp.server import results

    real_save = results.save_files

    async def swap_then_save(*args: Any, **kwargs: Any) -> None:
        os.rename(workdir / "out", workdir / "out-old")
        (workdir / "out").symlink_to(outside)
        await real_save(*args, **kwargs)

    monkeypatch.setattr(results, "save_files", swap_then_save)
    data = {"prompt": "paid then refused", "seed": 13}
    async with Client(server) as client:
        result = await call(
            client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": "out"}
        )
        error = error_of(result)
        assert error["kind"] == "refused" and error["request_id"]
        assert error["request_id"] in text_of(result) and "queue_result" in text_of(result)
        again = structured(await call(client, "queue_result", {"request_id": error["request_id"]}))
    assert again["status"] == "COMPLETED"
    assert list(outside.iterdir()) == []
    assert submissions(emulator, "fal-ai/flux/dev", data) == 1


async def test_a_crash_while_saving_a_paid_job_still_names_its_request_id(
    server: Any, workdir: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a refusal: an unexpected failure while saving (a bug) is reported as internal, with an incident
    id and the paid job's request id, so its result can still be fetched without paying again."""
    from fal_mcp.server import results

    async def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug in saving")

    monkeypatch.setattr(results, "save_files", crash)
    data = {"prompt": "paid then crashed", "seed": 14}
    async with Client(server) as client:
        result = await call(
            client, "fal_subscribe", {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": "out"}
        )
        error = error_of(result)
        assert error["kind"] == "internal" and error["incident"] and error["request_id"], error
        assert error["request_id"] in text_of(result) and "a bug in saving" not in text_of(result)
        again = structured(await call(client, "queue_result", {"request_id": error["request_id"]}))
    assert again["status"] == "COMPLETED"
    assert submissions(emulator, "fal-ai/flux/dev", data) == 1


async def test_plain_race_never_uploads_the_secret_or_a_file_over_the_cap(settings: Settings, workdir: Path) -> None:
    """The adversarial run's plain race (2-8 in 150 won): a thread keeps replacing the file with a symlink to
    a secret and with a 3 MB file while uploads run under a 100-byte cap. Each upload is refused or sends
    the small checked file; never the secret, never more than the cap."""
    import threading

    target = workdir / "cat.png"
    target.write_bytes(ORIGINAL)
    secret = workdir.parent / "id_ed25519"
    secret.write_bytes(SECRET)
    stop = threading.Event()

    def flip() -> None:
        builders = (
            lambda p: p.symlink_to(secret),
            lambda p: p.write_bytes(b"x" * 3_000_000),
            lambda p: p.write_bytes(ORIGINAL),
        )
        turn = 0
        while not stop.is_set():
            swap(target, builders[turn % 3])
            turn += 1

    flipper = threading.Thread(target=flip, daemon=True)
    sent: list[bytes] = []
    refused = 0
    async with Client(make_server(settings, max_upload_bytes=100)) as client:
        flipper.start()
        try:
            with anyio.fail_after(120):
                for _ in range(60):
                    result = await call(client, "upload_file", {"path": "cat.png"})
                    if result.is_error:
                        refused += 1
                    else:
                        sent.append(await fetched(structured(result)["url"]))
        finally:
            stop.set()
            flipper.join(10)
    assert sent + [b""] * refused and all(body == ORIGINAL for body in sent), [b[:40] for b in sent]
    assert len(sent) + refused == 60
    print(f"plain race: {len(sent)} sent (all the checked file), {refused} refused")
