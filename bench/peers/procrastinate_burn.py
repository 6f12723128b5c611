"""procrastinate's burn-down phases (runs from .venv-peers; see phases.py).

Enqueue: `Task.batch_defer_async`, its batch form, one call per CHUNK jobs.
Process: `App.run_worker_async` with its defaults (LISTEN/NOTIFY on, finished
jobs kept, the connector's default pool) except `concurrency=CONCURRENCY` and
`wait=False`, which returns once no job is left and every job has finished.
"""

from __future__ import annotations

import time

import procrastinate
from phases import CONCURRENCY, PAYLOAD, Countdown, chunks, main


def app_for(dsn: str) -> procrastinate.App:
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def setup(dsn: str, jobs: int) -> dict[str, float]:
    app = app_for(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    return {}


async def enqueue(dsn: str, jobs: int) -> dict[str, float]:
    app = app_for(dsn)

    @app.task(name="noop")
    async def noop(p: str) -> None:
        raise AssertionError("enqueue never runs jobs")

    async with app.open_async():
        began = time.perf_counter()
        for batch in chunks(jobs):
            await noop.batch_defer_async(*({"p": PAYLOAD} for _ in batch))
        return {"seconds": time.perf_counter() - began}


async def process(dsn: str, jobs: int) -> dict[str, float]:
    app = app_for(dsn)
    countdown = Countdown(jobs)

    @app.task(name="noop")
    async def noop(p: str) -> None:
        countdown.tick()

    async with app.open_async():
        began = time.perf_counter()
        await app.run_worker_async(concurrency=CONCURRENCY, wait=False)
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "processed": jobs - countdown.left}


if __name__ == "__main__":
    main({"setup": setup, "enqueue": enqueue, "process": process})
