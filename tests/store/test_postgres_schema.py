"""PostgreSQL's schema 3: a schema-2 database upgrades in place, and a running job's lease still works.

PostgreSQL only: the step drops an index of PostgreSQL's lease columns, which the other stores lack."""

from __future__ import annotations

import asyncio

import asyncpg

from domain import job
from service.clock import now_ms
from service.store.postgres import SCHEMA_VERSION
from tests.store.conftest import StoreHarness

SCHEMA_2_LEASE_INDEX = "CREATE INDEX kasp_jobs_leases ON kasp_jobs (lease_expires_ms) WHERE state = 'running'"


def test_a_schema_2_database_loses_the_lease_index_and_keeps_its_running_job(fresh_pg: str) -> None:
    h = StoreHarness(fresh_pg)
    try:
        store = h.open(lease_timeout_s=0.2)
        h.run(store.enqueue(job.enqueue("a", "p", 0, at_ms=now_ms()), capacity=10))
        assert h.claim_one(store) is not None
        h.close()

        async def as_schema_2() -> None:
            conn = await asyncpg.connect(fresh_pg)
            try:
                await conn.execute(SCHEMA_2_LEASE_INDEX)
                await conn.execute("DELETE FROM kasp_schema WHERE version > 2")
            finally:
                await conn.close()

        async def schema() -> tuple[int, list[str]]:
            conn = await asyncpg.connect(fresh_pg)
            try:
                version = await conn.fetchval("SELECT max(version) FROM kasp_schema")
                rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'kasp_jobs'")
                return version, [r[0] for r in rows]
            finally:
                await conn.close()

        h.run(as_schema_2())
        store = h.open(lease_timeout_s=0.2)
        version, indexes = h.run(schema())
        assert version == SCHEMA_VERSION  # steps 3 and later re-ran on the schema-2 database
        assert "kasp_jobs_leases" not in indexes
        # The running job's lease (from before the upgrade) expires and is recovered as ever.
        h.run(store.close())
        store = h.open(lease_timeout_s=0.2)

        async def recovered() -> int:
            deadline = now_ms() + 10_000
            while now_ms() < deadline:
                if count := await store.recover_expired():
                    return count
                await asyncio.sleep(0.05)
            return 0

        assert h.run(recovered()) == 1
        view = h.run(store.get_job("a"))
        assert view is not None and view.state.value == "queued" and view.attempts == 1
    finally:
        h.close_all()
        h.loop.close()
