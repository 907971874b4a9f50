"""Retention: the server prunes its ledger when it opens it (and every few hours), by age and by count,
keeping every unfinished job."""

from __future__ import annotations

import sqlite3
import time

import anyio
import pytest
from mcp import Client

from fal_mcp.config import Settings
from fal_mcp.ledger import Ledger
from tests.server.conftest import make_server, owner_of
from tests.server.helpers import call, structured

pytestmark = pytest.mark.anyio

DAY = 86400.0


async def test_the_server_prunes_old_and_surplus_finished_jobs(settings: Settings) -> None:
    owner = owner_of(settings)
    async with await anyio.to_thread.run_sync(Ledger.open, settings.ledger_path) as ledger:
        for n, status in enumerate(["COMPLETED", "IN_QUEUE", "COMPLETED", "FAILED", "COMPLETED"]):
            intent = await ledger.record_intent("fal-ai/flux/dev", owner, {"prompt": f"p{n}"}, "fal_subscribe")
            await ledger.attach_request_id(intent, f"req-{n:05d}-{status.lower()}", status=status)
    conn = sqlite3.connect(settings.ledger_path, isolation_level=None)
    for n, age_days in enumerate([40, 40, 3, 2, 1]):
        stamp = time.time() - age_days * DAY
        conn.execute(
            "UPDATE jobs SET updated_at = ?, created_at = ? WHERE request_id LIKE ?", (stamp, stamp, f"req-{n:05d}-%")
        )
    conn.close()
    server = make_server(settings, ledger_keep_days=30, ledger_keep_jobs=2)
    async with Client(server) as client:
        jobs = structured(await call(client, "jobs_list", {}))["jobs"]
    # 40-day-old finished: gone (age); 3-day-old finished: gone (only the 2 newest finished are kept);
    # the 40-day-old unfinished job stays.
    assert sorted(j["request_id"] for j in jobs) == ["req-00001-in_queue", "req-00003-failed", "req-00004-completed"]


async def test_retention_counts_each_callers_jobs_and_leaves_other_callers_alone(settings: Settings) -> None:
    """FAL_MCP_LEDGER_KEEP_JOBS is per caller: one busy per-user caller never pushes out another's history."""
    async with await anyio.to_thread.run_sync(Ledger.open, settings.ledger_path) as ledger:
        for owner in ("alice", "bob"):
            for n in range(4):
                intent = await ledger.record_intent("fal-ai/flux/dev", owner, {"prompt": f"{owner}{n}"}, "fal_run")
                await ledger.attach_request_id(intent, f"req-{owner}-{n}", status="COMPLETED")
        assert await ledger.prune(keep_jobs=2, owner="alice") == 2
        left = sorted([r.request_id or "" for r in await ledger.list("alice", limit=10)])
        left += sorted([r.request_id or "" for r in await ledger.list("bob", limit=10)])
    assert left == ["req-alice-2", "req-alice-3", "req-bob-0", "req-bob-1", "req-bob-2", "req-bob-3"]
