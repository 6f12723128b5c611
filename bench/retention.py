"""`make bench-stores` (last part): do SQLite and PostgreSQL stay flat in size under retention?

Drives each durable store in process (no HTTP) with RETAIN_FINISHED=N
(BENCH_RETAIN, default 5000) through ROUNDS x N jobs (BENCH_RETENTION_ROUNDS,
default 8): batches of 500 are enqueued, claimed and succeeded, as a busy
service runs them. After each N jobs it prints the store's size on disk:
SQLite, the database file and its WAL; PostgreSQL, pg_total_relation_size of
kasp_events and kasp_jobs (tables and indexes). Flat means the last rows are
about the size of the second: evicted jobs free the space that new ones take.
The machine is shared: only the sizes, not the timings, mean anything.
Usage: python bench/retention.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from domain import job  # noqa: E402
from service.clock import now_ms  # noqa: E402
from service.config import Config  # noqa: E402
from service.store import EventStore, open_store  # noqa: E402
from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

RETAIN = int(os.environ.get("BENCH_RETAIN", "5000"))
ROUNDS = int(os.environ.get("BENCH_RETENTION_ROUNDS", "8"))
BATCH = 500  # jobs per enqueue_many / claim_ready: a busy service's commit batch (a guess)
PG_ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_SIZE = "SELECT pg_total_relation_size('kasp_events') + pg_total_relation_size('kasp_jobs')"


def file_bytes(path: str) -> int:
    return os.stat(path).st_size if os.path.exists(path) else 0


async def run_jobs(store: EventStore, first: int, count: int) -> None:
    for start in range(first, first + count, BATCH):
        events = [
            job.enqueue(f"j{n}", f"payload {n:>90}", 0, at_ms=now_ms()) for n in range(start, start + BATCH)
        ]
        await store.enqueue_many(events, capacity=10**9)
        running = await store.claim_ready(at_ms=now_ms(), limit=BATCH)
        await asyncio.gather(*(store.append(job.succeed(v, at_ms=now_ms(), duration_ms=0)) for v in running))


async def measure(
    name: str, url: str, size: Callable[[], Awaitable[int]]
) -> list[tuple[int, int, int, float]]:
    store = open_store(Config(store=url, retain_finished=RETAIN))
    await store.open()
    rows = []
    began = time.monotonic()
    try:
        for round_ in range(1, ROUNDS + 1):
            await run_jobs(store, (round_ - 1) * RETAIN, RETAIN)
            await asyncio.sleep(0.5)  # let the last eviction steps (and a VACUUM) finish
            stats = await store.stats()
            rows.append((round_ * RETAIN, stats.event_count, await size(), time.monotonic() - began))
    finally:
        await store.close()
    print(f"\n{name}: RETAIN_FINISHED={RETAIN}, {ROUNDS} x {RETAIN} jobs")
    print(f"{'jobs run':>10}{'events kept':>13}{'bytes on disk':>15}{'seconds':>9}")
    for jobs, events, nbytes, seconds in rows:
        print(f"{jobs:>10}{events:>13}{nbytes:>15,}{seconds:>9.1f}")
    second, last = rows[min(1, len(rows) - 1)][2], rows[-1][2]
    print(f"size after the last round / after the second: {last / second:.2f}")
    return rows


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kasp.db")

        async def sqlite_size() -> int:
            return file_bytes(path) + file_bytes(path + "-wal")

        await measure("SQLite (database file + WAL)", f"sqlite:///{path}", sqlite_size)
    name = f"kasp_bench_{uuid.uuid4().hex[:8]}"
    await create_database(PG_ADMIN_DSN, name)
    dsn = dsn_for(PG_ADMIN_DSN, name)
    try:

        async def pg_size() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval(PG_SIZE))
            finally:
                await conn.close()

        await measure("PostgreSQL (kasp_events + kasp_jobs, with indexes)", dsn, pg_size)
    finally:
        await drop_database(PG_ADMIN_DSN, name)


if __name__ == "__main__":
    asyncio.run(main())
