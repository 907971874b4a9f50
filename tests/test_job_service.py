"""The paid job's home knows nothing of MCP: it imports no ``mcp`` module, so it can't lean on the SDK."""

from __future__ import annotations

import subprocess
import sys


def test_the_job_service_imports_no_mcp() -> None:
    code = (
        "import sys, fal_mcp.job_service, fal_mcp.failures, fal_mcp.ledger\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_queue_submits_are_sent_only_by_the_job_service() -> None:
    """Every queue submit goes through JobService.submit (ledger intent first, one lock, one lease)."""
    from pathlib import Path

    import fal_mcp

    package = Path(fal_mcp.__file__).parent
    senders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "emulator" not in path.parts and ".queue.submit(" in path.read_text()
    )
    assert senders == ["job_service.py"]
