"""pgqueuer's burn-down phases (runs from .venv-peers; see phases.py).

Enqueue: `Queries.enqueue` with lists, its batch form, one call per CHUNK jobs.
Process: a `QueueManager` on one asyncpg connection (what `pgq run` uses), the
defaults of `QueueManager.run` (batch_size=10, durable tables) except
`max_concurrent_tasks=CONCURRENCY` and `mode=drain`, which returns once the queue
is empty and every job has finished.
"""

from __future__ import annotations

import time

import asyncpg
from pgqueuer import QueueManager
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode
from phases import CONCURRENCY, PAYLOAD, Countdown, chunks, main

ENTRYPOINT = "noop"


async def setup(dsn: str, jobs: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return {}


async def enqueue(dsn: str, jobs: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        payload = PAYLOAD.encode()
        began = time.perf_counter()
        for batch in chunks(jobs):
            n = len(batch)
            await queries.enqueue([ENTRYPOINT] * n, [payload] * n, [0] * n)
        return {"seconds": time.perf_counter() - began}
    finally:
        await conn.close()


async def process(dsn: str, jobs: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        countdown = Countdown(jobs)

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            countdown.tick()

        began = time.perf_counter()
        await qm.run(mode=QueueExecutionMode.drain, max_concurrent_tasks=CONCURRENCY)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "processed": jobs - countdown.left}
    finally:
        await conn.close()


if __name__ == "__main__":
    main({"setup": setup, "enqueue": enqueue, "process": process})
