"""Run the benchmarks, each in a fresh interpreter, then summarize every target from the JSON results.

python benchmarks/run.py --all              # every benchmark (~4 minutes on 2 cores)
python benchmarks/run.py cold_start faults  # some of them
python benchmarks/run.py --summary          # only the summary of the committed results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ("cold_start", "tool_list", "completion", "memory", "faults", "per_user_keys")


def say(text: str = "") -> None:
    print(text)  # noqa: T201 - a script: its summary is its output


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows() -> list[list[str]]:
    """One row per target: what was measured, the target, and whether it was met."""
    rows: list[list[str]] = []
    if cold := _load("cold_start"):
        rows.append(
            [
                "1 cold start → tools/list",
                f"{cold['ratio_median']:.3f}x median, {cold['ratio_min']:.3f}x min, "
                f"{cold['ratio_paired']['median']:.3f}x paired",
                cold["target"],
                _verdict(cold["met"]),
            ]
        )
    if tools := _load("tool_list"):
        rows.append(
            [
                "2 tool list: model reads / whole",
                f"{tools['model_reads_bytes']} B / {tools['full_tools_list_bytes']} B",
                f"{tools['target']} / {tools.get('whole_target', '-')}",
                _verdict(tools["met"]),
            ]
        )
    if completion := _load("completion"):
        for row in completion["latency"]:
            rows.append(
                [
                    f"3 completion → client ({row['transport']}, {row['endpoint']})",
                    f"median: progress {row['progress_ms']['median']:.1f} ms, "
                    f"return {row['return_ms']['median']:.1f} ms",
                    "~20 ms",
                    _verdict(row["progress_ms"]["median"] <= 20),
                ]
            )
        per_job = ", ".join(
            f"{r['transport']} {r['job_seconds']:g}s: {r['requests_per_job']:g}" for r in completion["requests_per_job"]
        )
        rows.append(
            [
                "3 HTTP requests per job",
                per_job,
                "constant in job length",
                _verdict(completion["met_requests_constant"]),
            ]
        )
    if memory := _load("memory"):
        for row in memory["concurrent_jobs"]:
            env = "".join(f", {k}={v}" for k, v in row["env"].items())
            rows.append(
                [
                    f"4 {row['jobs']} concurrent jobs ({row['endpoint']}{env})",
                    f"peak {row['process_peak_mb']} MiB ({row['process_peak_mb'] * 1.048576:.0f} MB)",
                    "< 150 MB" if not env else "(diagnostic)",
                    _verdict(row["met"]),
                ]
            )
        if upload := memory.get("upload"):
            rows.append(
                [
                    f"4 upload_file of {upload['size_mib']} MiB",
                    f"+{upload['added_mb']} MiB ({upload['added_mb'] * 1.048576:.0f} MB)",
                    "< 64 MB added",
                    _verdict(upload["met"]),
                ]
            )
    if faults := _load("faults"):
        rows.append(
            [
                f"5 {faults['jobs']} jobs under {faults['config']['rate']:.0%} faults",
                f"{faults['completed']}/{faults['jobs']} completed, "
                f"{faults.get('reported_outcome_unknown', 0)} reported outcome unknown, "
                f"max {faults['max_submissions_per_body']} submit/body, "
                f"{faults['ids_in_jobs_list']}/{faults['requests_at_emulator']} ids listed",
                "all complete, once, listed",
                _verdict(faults["met"]),
            ]
        )
    return rows


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run fal-mcp's benchmarks (see BENCHMARKS.md).")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("--all", action="store_true", help="run every benchmark")
    parser.add_argument("--summary", action="store_true", help="only summarize the existing results")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.all else args.names
    if not names and not args.summary:
        parser.error("name some benchmarks, or pass --all or --summary")
    if unknown := [name for name in names if name not in BENCHMARKS]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    failed = []
    for name in names:
        say(f"\n=== {name} ===")
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT).returncode != 0:
            failed.append(name)
    rows = summary_rows()
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else []
    say("\n=== targets ===")
    for row in rows:
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    (RESULTS / "summary.json").write_text(
        json.dumps([dict(zip(("target", "measured", "goal", "verdict"), r, strict=True)) for r in rows], indent=2)
        + "\n"
    )
    if failed:
        say(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
