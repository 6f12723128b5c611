"""`python bench/pg_store_costs.py [LABEL]`: CPU per job of the PostgreSQL store alone, no HTTP.

32 tasks enqueue N jobs one by one (group commit batches them), then 8
workers claim and record `succeeded`, each outcome sent together with the
next claim (as service/pool.py does), until the queue is empty. Prints CPU-ms
per job of this process and of the server backends of its database
(pg_stat_activity, /proc), per phase: figures a loaded machine distorts far
less than wall-clock rates. Run it from another checkout (cwd and PYTHONPATH
there) to compare code versions side by side, alternating.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from domain import job
from service.clock import now_ms
from service.config import Config
from service.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support of this checkout

from tests.support.postgres import create_database, drop_database, dsn_for

ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
JOBS = int(os.environ.get("BENCH_JOBS", "8000"))
ENQUEUERS = 32  # concurrent HTTP requests in bench/stores.py's wrk run
WORKERS = 8  # bench/stores.py's WORKERS
TICKS = os.sysconf("SC_CLK_TCK")


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

    async def server_cpu() -> float:
        rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", db)
        return sum(cpu_s(r[0]) for r in rows)

    try:
        store = open_store(Config(store=dsn_for(ADMIN_DSN, db), retain_finished=10**9, lease_timeout=30))
        await store.open()
        pg0, own0 = await server_cpu(), time.process_time()

        async def enqueue(first: int) -> None:
            for n in range(first, JOBS, ENQUEUERS):
                await store.enqueue(job.enqueue(f"j{n}", "p", 0, at_ms=now_ms()), capacity=10**9)

        await asyncio.gather(*(enqueue(i) for i in range(ENQUEUERS)))
        pg1, own1 = await server_cpu(), time.process_time()

        async def work() -> None:
            claimed = await store.claim_ready(at_ms=now_ms())
            while claimed:
                outcome = job.succeed(claimed[0], at_ms=now_ms(), duration_ms=0)
                _, claimed = await asyncio.gather(store.append(outcome), store.claim_ready(at_ms=now_ms()))

        await asyncio.gather(*(work() for _ in range(WORKERS)))
        pg2, own2 = await server_cpu(), time.process_time()
        await store.close()
    finally:
        await admin.close()
        await drop_database(ADMIN_DSN, db)
    ms = 1000 / JOBS
    print(
        f"{label}: CPU-ms per job: enqueue PostgreSQL {(pg1 - pg0) * ms:.3f} kasp {(own1 - own0) * ms:.3f}"
        f" | drain PostgreSQL {(pg2 - pg1) * ms:.3f} kasp {(own2 - own1) * ms:.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else Path.cwd().name))
