"""Saved outputs: what provenance and the gallery cost (issue 11 #4).

1. The provenance writer on large images (PNG, JPEG, WebP of 6000x6000 noise, 25-55 MB): time and the
   peak of Python allocations while it runs. It edits the container only, so memory should not grow
   with the image (the copy goes through a 1 MiB buffer) and no pixel is decoded.
2. ``fal_subscribe`` with ``download_dir`` through the in-memory MCP client against the emulator, 4
   images of 1024x768 per job, 20 jobs into one folder: the call's time with provenance and the
   gallery on (the default) and off, so their overhead per job is visible.

    python -m benchmarks.saving
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from benchmarks._common import print_table, say, summarize, write_result
from benchmarks._mcp import mcp_client, structured
from fal_mcp.emulator.config import EmulatorConfig
from fal_mcp.emulator.server import EmulatorServer
from fal_mcp.log import configure_logging
from fal_mcp.server.provenance import HEAD_BYTES, Provenance, sniff, write_provenance

SIDE = 6000
JOBS = 20
PROVENANCE = Provenance("fal-ai/flux/dev", "req", "2026-01-01T00:00:00+00:00", seed=1, prompt="p" * 4000)


def writer(directory: Path) -> list[dict[str, Any]]:
    from PIL import Image

    image = Image.effect_noise((SIDE, SIDE), 64).convert("RGB")
    rows = []
    for fmt, options in (("PNG", {"compress_level": 1}), ("JPEG", {"quality": 95}), ("WEBP", {"quality": 90})):
        source = directory / f"big.{fmt.lower()}"
        image.save(source, fmt, **options)
        with source.open("rb") as handle:
            file_type = sniff(handle.read(HEAD_BYTES))
        tracemalloc.start()
        started = time.perf_counter()
        with source.open("rb") as src, (directory / f"tagged.{fmt.lower()}").open("wb") as dst:
            written = write_provenance(src, dst, file_type, PROVENANCE)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert written
        rows.append(
            {
                "format": fmt,
                "bytes": source.stat().st_size,
                "ms": round(seconds * 1000, 1),
                "peak_python_alloc_mib": round(peak / 2**20, 2),
            }
        )
    return rows


async def jobs(directory: Path, emulator: EmulatorServer, on: bool) -> dict[str, Any]:
    flag = "1" if on else "0"
    folder = directory / ("on" if on else "off")
    folder.mkdir()
    env = {"FAL_MCP_ALLOWED_DIRS": str(directory), "FAL_MCP_PROVENANCE": flag, "FAL_MCP_GALLERY": flag}
    env["FAL_MCP_THUMBNAILS"] = "0"
    times = []
    async with mcp_client("memory", emulator.base_url, directory / f"state-{flag}", **env) as client:
        for n in range(JOBS):
            data = {"prompt": f"benchmark {n}", "seed": n, "num_images": 4, "output_format": "png"}
            args = {"endpoint_id": "fal-ai/flux/dev", "input": data, "download_dir": str(folder)}
            started = time.perf_counter()
            result = structured(await client.call_tool("fal_subscribe", args))
            times.append((time.perf_counter() - started) * 1000)
            assert all(f.get("saved_path") for f in result["files"])
    files = sorted(p.name for p in folder.iterdir())
    return {"provenance_and_gallery": on, "ms": summarize(times), "files_in_folder": len(files)}


def main() -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="fal-mcp-bench-saving-") as tmp:
        directory = Path(tmp)
        written = writer(directory)
        with EmulatorServer(EmulatorConfig(time_scale=0.01)) as emulator:
            runs = [anyio.run(jobs, directory, emulator, on) for on in (False, True)]
    print_table(
        f"Provenance writer, {SIDE}x{SIDE} noise",
        ["format", "size (MB)", "time (ms)", "peak Python allocations (MiB)"],
        [[r["format"], r["bytes"] / 1e6, r["ms"], r["peak_python_alloc_mib"]] for r in written],
    )
    print_table(
        f"fal_subscribe + download_dir, 4 PNG images of 1024x768 per job, {JOBS} jobs into one folder",
        ["provenance + gallery", "median (ms)", "p90 (ms)", "files in folder"],
        [[r["provenance_and_gallery"], r["ms"]["median"], r["ms"]["p90"], r["files_in_folder"]] for r in runs],
    )
    path = write_result("saving", {"writer": written, "jobs": runs})
    say(f"\nwrote {path}")


if __name__ == "__main__":
    main()
