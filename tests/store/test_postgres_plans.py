"""PostgreSQL's hot queries read in the order of an index, before and after ANALYZE, as
custom and as generic plans (asyncpg prepares every statement, and the server switches a
prepared statement to its generic plan after five runs), with the same indexes either way,
so a claim's cost does not grow with the backlog and does not depend on the statistics.

PostgreSQL only: query plans are its planner's; SQLite's claim names its index (INDEXED BY)
and memory has no planner."""

from __future__ import annotations

import asyncio
import re

import asyncpg

from domain import job
from service.clock import now_ms
from service.store.postgres import Q
from tests.store.conftest import StoreHarness

#: query name -> the index its plan must scan; every plan scans some index, never the table
HOT = {
    "claimable": "kasp_jobs_claim",  # the claim order itself: the first rows are the answer
    "lock_jobs": "kasp_jobs_pkey",
    "lock_jobs_and_claimable": "kasp_jobs_claim",
    "lock_log_counting_delayed": "kasp_jobs_queue",
    "evictable": "kasp_jobs_finished",
    "any_expired": "kasp_jobs_state",  # running jobs are a few per worker: their state's entries
    "expired": "kasp_jobs_state",
    "list_jobs": "kasp_events_pkey",  # enqueue order is the enqueued events' seq order (schema 5)
}
#: the payload probe every read of a job row makes (schema 5: payloads live in the enqueued event)
PAYLOAD_INDEX = "kasp_events_job_id_version_key"
READS_A_ROW = {"claimable", "lock_jobs", "lock_jobs_and_claimable", "evictable", "expired"}


def test_claims_and_counts_use_their_index_before_and_after_analyze(fresh_pg: str) -> None:
    h = StoreHarness(fresh_pg)
    try:
        store = h.open(retain_finished=10**9)

        async def backlog() -> None:
            for first in range(0, 6000, 1000):
                events = [job.enqueue(f"j{n}", "p", 0, at_ms=now_ms()) for n in range(first, first + 1000)]
                await store.enqueue_many(events, capacity=10**9)
            running = await store.claim_ready(at_ms=now_ms(), limit=2000)
            await asyncio.gather(
                *(store.append(job.succeed(v, at_ms=now_ms(), duration_ms=0)) for v in running)
            )

        h.run(backlog())

        async def plans(analyze: bool, mode: str) -> dict[str, str]:
            conn = await asyncpg.connect(
                fresh_pg, server_settings={"enable_sort": "off", "plan_cache_mode": mode}
            )
            try:
                if analyze:
                    await conn.execute("ANALYZE kasp_jobs, kasp_events")
                args = {
                    "claimable": (now_ms(), 8),
                    "lock_jobs": (["j1", "j2"],),
                    "lock_jobs_and_claimable": (["j1", "j2"], now_ms(), 8),
                    "lock_log_counting_delayed": (now_ms(),),
                    "evictable": (100,),
                    "expired": (100,),
                    "list_jobs": (0, 50),
                }
                found = {}
                for name in HOT:
                    explain = await conn.prepare("EXPLAIN " + Q[name])
                    found[name] = "\n".join(r[0] for r in await explain.fetch(*args.get(name, ())))
                return found
            finally:
                await conn.close()

        indexes: dict[tuple[str, str], set[str]] = {}
        for mode in ("force_custom_plan", "force_generic_plan"):
            for analyze in (False, True):
                for name, plan in h.run(plans(analyze, mode)).items():
                    assert re.search(rf"Index (Only )?Scan (using|on) {HOT[name]}", plan), (
                        analyze,
                        mode,
                        name,
                        plan,
                    )
                    assert "Seq Scan on kasp_jobs" not in plan, (analyze, mode, name, plan)
                    assert "Seq Scan on kasp_events" not in plan, (analyze, mode, name, plan)
                    if name in READS_A_ROW:
                        assert PAYLOAD_INDEX in plan, (analyze, mode, name, plan)
                    used = set(re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:using|on) (\w+)", plan))
                    assert indexes.setdefault((name, mode), used) == used, (analyze, mode, name, plan)
    finally:
        h.close_all()
        h.loop.close()
