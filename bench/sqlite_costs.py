"""`python bench/sqlite_costs.py [LABEL]`: what the SQLite store costs per job, in process, no HTTP.

Three phases on a fresh file, each printing figures a loaded machine moves far
less than wall-clock rates:

- batch: 8 tasks (bench/batch.py's `wrk -c8`) each admit batches of 100 new jobs
  through `enqueue_many` (the store under POST /enqueue/batch), BENCH_BATCH_JOBS
  (100,000) in all;
- single: 32 tasks (bench/stores.py's `wrk -c32`) enqueue BENCH_JOBS (8,000) jobs
  one by one (the store under POST /enqueue);
- drain: 8 workers claim and record `succeeded`, each outcome sent together with
  the next claim as service/pool.py does, until the queue is empty.

Per phase: CPU-µs per job of the event loop's thread and of the other threads
(the COMMIT runs in one), SQLite statements executed and commits per job (the
connection's trace callback: a row of an `executemany` counts once), and jobs
per wall-clock second. Count fsyncs with `strace -f -c -e trace=fsync,fdatasync`.
Run it from another checkout (cwd and PYTHONPATH there, e.g. /work/wt-old, whose
store has no `enqueue_many`: its batch phase is skipped) to compare versions,
alternating A B A B, pinned: `taskset -c 0 .venv/bin/python bench/sqlite_costs.py`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from domain import job
from service.clock import now_ms
from service.store import open_store

BATCH_JOBS = int(os.environ.get("BENCH_BATCH_JOBS", "100000"))
JOBS = int(os.environ.get("BENCH_JOBS", "8000"))
BATCH = 100
BATCHERS = 8
ENQUEUERS = 32
WORKERS = 8
PHASES = os.environ.get("BENCH_PHASES", "batch,single,drain").split(",")  # e.g. one at a time under py-spy
TICKS = os.sysconf("SC_CLK_TCK")


def open_sqlite(path: str) -> Any:
    url = f"sqlite:///{path}"
    try:
        from service.config import Config

        return open_store(Config(store=url))
    except TypeError:  # the old code (before the store core) takes the URL
        return open_store(url, retain_finished=10**9)  # type: ignore[arg-type]


def thread_cpu() -> tuple[float, float]:
    """(CPU-seconds of the main thread, of every other thread) of this process so far."""
    main = others = 0.0
    main_tid = threading.main_thread().native_id
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        if int(task.name) == main_tid:
            main += cpu
        else:
            others += cpu
    return main, others


class Counting:
    """Statements and COMMITs the writer connection executes."""

    def __init__(self) -> None:
        self.statements = self.commits = 0

    def __call__(self, sql: str) -> None:
        self.statements += 1
        if sql == "COMMIT":
            self.commits += 1


async def phase(name: str, jobs: int, counting: Counting, run: Callable[[], Awaitable[Any]]) -> None:
    statements, commits = counting.statements, counting.commits
    main0, others0 = thread_cpu()
    wall0 = time.monotonic()
    await run()
    wall = time.monotonic() - wall0
    main1, others1 = thread_cpu()
    us = 1e6 / jobs
    print(
        f"  {name:<6} loop thread {(main1 - main0) * us:6.1f} µs/job, other threads "
        f"{(others1 - others0) * us:5.1f} µs/job, statements/job "
        f"{(counting.statements - statements) / jobs:5.2f}, commits/job "
        f"{(counting.commits - commits) / jobs:6.4f}, {jobs / wall:8,.0f} jobs/s",
        flush=True,
    )


async def main(label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_sqlite(f"{tmp}/kasp.db")
        await store.open()
        counting = Counting()
        store_conn = getattr(store, "_conn", None) or store._log.conn  # the old store keeps it in _log
        store_conn.set_trace_callback(counting)
        print(f"{label}:")

        async def batches(first: int) -> None:
            for n in range(first, BATCH_JOBS // BATCH, BATCHERS):
                at = now_ms()
                events = [job.enqueue(f"b{n}-{i}", "p" * 100, 3, at_ms=at) for i in range(BATCH)]
                await store.enqueue_many(events, capacity=10**9)

        async def singles(first: int) -> None:
            for n in range(first, JOBS, ENQUEUERS):
                await store.enqueue(job.enqueue(f"j{n}", "p", 0, at_ms=now_ms()), capacity=10**9)

        async def work() -> None:
            while True:
                claimed = await store.claim_ready(at_ms=now_ms())
                view = claimed[0] if isinstance(claimed, list) and claimed else claimed
                if not view:
                    return
                while view:
                    outcome = job.succeed(view, at_ms=now_ms(), duration_ms=0)
                    _, claimed = await asyncio.gather(
                        store.append(outcome), store.claim_ready(at_ms=now_ms())
                    )
                    view = claimed[0] if isinstance(claimed, list) and claimed else claimed

        if "batch" in PHASES and hasattr(store, "enqueue_many"):
            await phase("batch", BATCH_JOBS, counting, lambda: asyncio.gather(*map(batches, range(BATCHERS))))
            # Start the next phases on an empty queue: the batch jobs are left queued, unclaimed.
            await store.close()
            store = open_sqlite(f"{tmp}/kasp2.db")
            await store.open()
            store._conn.set_trace_callback(counting)
        if "single" in PHASES or "drain" in PHASES:
            await phase("single", JOBS, counting, lambda: asyncio.gather(*map(singles, range(ENQUEUERS))))
        if "drain" in PHASES:
            await phase("drain", JOBS, counting, lambda: asyncio.gather(*(work() for _ in range(WORKERS))))
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else Path.cwd().name))
