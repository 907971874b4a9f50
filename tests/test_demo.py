"""``fal-mcp demo`` end to end, as a user runs it: a subprocess that runs its own stdio server subprocess."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

STEPS = (
    "1. model_search",
    "2. model_schema",
    "3. upload_file",
    "4. fal_subscribe (image-to-image)",
    "5. fal_subscribe (text-to-speech, then speech-to-text)",
    "6. queue_submit + queue_status + queue_result",
    "7. queue_submit + queue_cancel",
    "8. jobs_list",
)
ANSI = re.compile(r"\x1b\[")


def demo_env() -> dict[str, str]:
    """A fresh machine: no key, no fal-mcp settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CLAUDE_"))}
    env["COLUMNS"] = "120"
    return env


def run_demo(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fal_mcp", "demo", *args],
        cwd=cwd,
        env=demo_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=90,
    )
    return result, time.monotonic() - started


def step_line(output: str, step: str) -> str:
    return next(line for line in output.splitlines() if line[2:].startswith(step))


def test_plain_demo_runs_every_step_offline(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result, seconds = run_demo(tmp_path, "--plain", "--output-dir", str(out_dir), "--time-scale", "0.05")
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert seconds < 45
    for step in STEPS:
        assert step_line(output, step).startswith("✓ "), step
    assert not ANSI.search(output) and "\r" not in output  # plain: no escape codes, no carriage returns
    assert "Traceback" not in output + result.stderr
    # The details a newcomer should see.
    assert re.search(r"\d+ models for 'image'", step_line(output, STEPS[0]))
    assert "image_url*" in step_line(output, STEPS[1]) and "file fields: image_url" in step_line(output, STEPS[1])
    assert "/cdn/" in step_line(output, STEPS[2])
    assert "local path uploaded automatically" in step_line(output, STEPS[3])
    assert "· Denoising step 28/28 (100%)" in output  # plain progress: one line per new message
    speech = step_line(output, STEPS[4])
    assert "audio/wav saved to" in speech and "transcribed back: 'Hello from the offline fal emulator'" in speech
    assert "COMPLETED" in step_line(output, STEPS[5]) and "Slept 6 seconds" in step_line(output, STEPS[5])
    assert "CANCELLATION_REQUESTED" in step_line(output, STEPS[6])
    jobs = step_line(output, STEPS[7])
    assert "5 jobs" in jobs and "COMPLETED" in jobs and "CANCELLED" in jobs
    assert "all steps passed" in output and "claude mcp add" in output and "The emulator ran 5 jobs" in output
    # Real images: the sample that was uploaded and the generated one, at the sample's size.
    images = sorted(out_dir.glob("*.png"))
    assert len(images) == 2, images
    for path in images:
        with Image.open(path) as image:
            image.load()
            assert image.size == (512, 384)
    generated = next(p for p in images if p.name != "sample.png")
    assert generated.name in step_line(output, STEPS[3])


def test_tty_demo_draws_a_live_progress_bar(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    stderr_path = tmp_path / "stderr.txt"
    try:
        with stderr_path.open("wb") as stderr_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "fal_mcp", "demo", "--output-dir", "out", "--time-scale", "0.1"],
                cwd=tmp_path,
                env=demo_env(),
                stdin=subprocess.DEVNULL,
                stdout=terminal,
                stderr=stderr_file,
            )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
        stderr = stderr_path.read_text(errors="replace")
    finally:
        os.close(controller)
    output = b"".join(chunks).decode("utf-8", errors="replace")
    assert process.returncode == 0, output + stderr
    redraws = [frame for frame in output.split("\r\x1b[2K") if frame.lstrip().startswith("flux")]
    bars = [frame for frame in redraws if "[" in frame and "%" in frame]
    assert len(redraws) >= 3, redraws  # one line, redrawn in place
    percents = [int(m.group(1)) for frame in bars if (m := re.search(r"\]\s+(\d+)%", frame))]
    assert len(set(percents)) >= 2 and percents[-1] == 100, percents  # the bar moved, and finished
    assert "\x1b[32m✓\x1b[0m 4. fal_subscribe" in output  # colours on a terminal


def test_failing_step_exits_non_zero_with_a_clean_message(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    result, _ = run_demo(tmp_path, "--output-dir", str(blocker), "--time-scale", "0.05")  # piped: plain
    output = result.stdout
    assert result.returncode == 1
    assert "Traceback" not in output + result.stderr
    assert not ANSI.search(output) and "\r" not in output
    upload = step_line(output, STEPS[2])
    assert upload.startswith("✗ ") and "cannot use" in upload and "as the output directory" in upload
    assert step_line(output, STEPS[3]).startswith("✗ ") and "skipped" in step_line(output, STEPS[3])
    assert step_line(output, STEPS[4]).startswith("✗ ") and "refused" in step_line(output, STEPS[4])  # saves there too
    for step in (*STEPS[:2], *STEPS[5:]):  # the independent steps still ran
        assert step_line(output, step).startswith("✓ "), step
    assert "5/8 steps passed" in output and "Failed: upload_file: cannot use" in output
