"""PostgreSQL restarted or stopped under enqueue load: 503s, never 500s, and recovery by itself.

On a throwaway cluster of this module's own (never the shared one on :5432); kasp
is a real server that is not restarted. PostgreSQL only: SQLite has no server to
lose, and the memory store cannot fail this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from service.config import Config
from tests.docs.contract import check
from tests.faults.load import EnqueueLoad, wait_all_finished
from tests.support.pg_cluster import ThrowawayCluster
from tests.support.server import FAST, RunningServer, wait_until


@pytest.fixture
def kasp(cluster_dsn: str) -> Iterator[tuple[RunningServer, httpx.Client]]:
    config = Config(
        **{
            **FAST,
            "processor": "tests.support.processors:scripted",
            "store": cluster_dsn,
            "workers": 4,
            "queue_size": 100_000,
            "lease_timeout": 3.0,
        }
    )  # type: ignore[arg-type]
    server = RunningServer(config).start()
    client = httpx.Client(base_url=server.url, timeout=15)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def test_a_restart_under_load_gives_503s_and_kasp_recovers_alone(
    cluster: ThrowawayCluster, kasp: tuple[RunningServer, httpx.Client]
) -> None:
    server, client = kasp
    load = EnqueueLoad(server.url).start()
    try:
        load.wait_for(202, more_than=20)
        cluster.restart()
        accepted_before = load.count(202)
        load.wait_for(202, more_than=accepted_before + 20)  # accepting again, by itself
    finally:
        load.stop()
    load.check_answers()
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=15)
    wait_all_finished(client, load.accepted())
    # The LISTEN connection (other instances' wake-ups) is re-opened too, within lease/3.
    wait_until(lambda: asyncio.run(_listening(cluster.admin_dsn)), timeout=10, interval=0.2)


async def _listening(admin_dsn: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'kasp % listen'"
        return bool(await conn.fetchval(sql))
    finally:
        await conn.close()


def test_a_stopped_server_means_503_and_readyz_503_until_it_is_back(
    cluster: ThrowawayCluster, kasp: tuple[RunningServer, httpx.Client]
) -> None:
    server, client = kasp
    load = EnqueueLoad(server.url).start()
    try:
        load.wait_for(202, more_than=20)
        cluster.stop()
        try:
            load.wait_for(503, more_than=5)
            ready = client.get("/readyz")
            assert (ready.status_code, check(ready)["status"]) == (503, "store_unavailable")
            assert client.get("/healthz").status_code == 200  # the process lives
            job = client.get("/jobs/load-1")
            assert (job.status_code, check(job)["error"]) == (503, "store_unavailable")
        finally:
            cluster.start()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=15)
        accepted_before = load.count(202)
        load.wait_for(202, more_than=accepted_before + 20)
    finally:
        load.stop()
    load.check_answers()
    wait_all_finished(client, load.accepted())
