"""`python bench/pg_store_costs.py [LABEL]`: CPU per job of kasp on PostgreSQL, no HTTP.

The burn-down of `make bench-peers` (bench/peers/kasp_burn.py: build_parts with
a PostgreSQL Config, WORKERS=32, a no-op processor), measured in figures a
loaded machine distorts far less than wall-clock rates: BENCH_JOBS (20,000) jobs
are enqueued through `Engine.enqueue_many`, 1,000 a call (what POST
/enqueue/batch does), then the WorkerPool drains them. Per phase it prints
CPU-ms per job of this process and of the server backends of its database
(pg_stat_activity, /proc), commits per job, and the wall-clock rate. Run it from
another checkout (cwd and PYTHONPATH there) to compare code versions side by
side, alternating. KASP_TEST_PG names the server (default 127.0.0.1:5432).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support of this checkout

from kasp_burn import enqueue, process

from tests.support.postgres import create_database, drop_database, dsn_for

ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
JOBS = int(os.environ.get("BENCH_JOBS", "20000"))
TICKS = os.sysconf("SC_CLK_TCK")


class BatchSizes:
    """Counts the group commit's batches and their requests by kind (GroupCommit._take wrapped):
    how many requests share a commit, the figure a latency-bound pool moves."""

    def __init__(self) -> None:
        from collections import Counter

        from service.store.core import GroupCommit

        self.batches = 0
        self.overlapped = 0  # batches begun while the one before was still in flight ("overlapped")
        self.kinds: Counter[str] = Counter()
        take = GroupCommit._take

        def counted(commit: GroupCommit, busy: frozenset[str]) -> list[Any]:
            batch = take(commit, busy)
            if batch:
                self.batches += 1
                newest = commit._newest
                self.overlapped += newest is not None and not newest.done()
                self.kinds.update(op.kind for op in batch)
            return batch

        GroupCommit._take = counted  # type: ignore[method-assign]

    def since(self, before: tuple[int, int, dict[str, int]]) -> str:
        batches, overlapped = self.batches - before[0], self.overlapped - before[1]
        kinds = {k: n - before[2].get(k, 0) for k, n in self.kinds.items()}
        per = ", ".join(f"{k} {n / max(batches, 1):.1f}" for k, n in sorted(kinds.items()) if n)
        return f"{batches} batches ({per} a batch; {overlapped / max(batches, 1):.0%} overlapped)"

    def mark(self) -> tuple[int, int, dict[str, int]]:
        return self.batches, self.overlapped, dict(self.kinds)


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def main(label: str) -> None:
    db = f"kasp_storecost_{uuid.uuid4().hex[:8]}"
    await create_database(ADMIN_DSN, db)
    admin = await asyncpg.connect(ADMIN_DSN)
    dsn = dsn_for(ADMIN_DSN, db)
    seen: dict[int, float] = {}  # backend pid -> its CPU when last read (backends come and go)

    async def server_cpu() -> float:
        rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", db)
        for r in rows:
            seen[r[0]] = cpu_s(r[0]) or seen.get(r[0], 0.0)
        return sum(seen.values())

    async def commits() -> int:
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await admin.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", db)
        return value

    async def sampled(phase: asyncio.Task[dict[str, float]]) -> float:
        """Backend CPU while the phase runs (read every 50 ms, before its connections close)."""
        while not phase.done():
            await server_cpu()
            await asyncio.wait([phase], timeout=0.05)
        return await server_cpu()

    sizes = BatchSizes()
    try:
        figures = []
        for name, run in (("enqueue", enqueue), ("drain", process)):
            mark = sizes.mark()
            pg0, own0, c0, t0 = await server_cpu(), time.process_time(), await commits(), time.perf_counter()
            task = asyncio.get_running_loop().create_task(run(dsn, JOBS))
            pg1 = await sampled(task)
            wall, own1 = time.perf_counter() - t0, time.process_time()
            await asyncio.sleep(0.6)  # the stats collector's flush (PGSTAT_MIN_INTERVAL is 1 s at most)
            c1 = await commits()
            ms = 1000 / JOBS
            figures.append(
                f"{name} PostgreSQL {(pg1 - pg0) * ms:.3f} kasp {(own1 - own0) * ms:.3f} CPU-ms/job,"
                f" {(c1 - c0) / JOBS:.3f} commits/job, {JOBS / wall:,.0f} jobs/s, {sizes.since(mark)}"
            )
    finally:
        await admin.close()
        await drop_database(ADMIN_DSN, db)
    print(f"{label}: " + " | ".join(figures))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1] if len(sys.argv) > 1 else Path.cwd().name))
