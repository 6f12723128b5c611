"""SQLite's own schema: a file of schema 2 upgrades in place, and every query reads through an index.

SQLite only: the migration steps and query plans are this driver's (PostgreSQL has its own,
tests/store/test_postgres_schema.py and test_postgres_plans.py; memory has no schema)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3

from domain import job
from domain.projection import project
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.rows import EVENT_COLUMNS, JOB_COLUMNS, Rows, event_row
from service.store.sqlite import MIGRATIONS, SCHEMA_VERSION, Q
from tests.store.conftest import StoreHarness


def _schema_2_file(path: str) -> dict[str, object]:
    """A file as a kasp of schema 2 left it: a done job, a running one, a queued one."""
    at = now_ms()
    done = job.enqueue("done", "p1", 0, at_ms=at).with_seq(1)
    running = job.enqueue("running", "p2", 1, at_ms=at).with_seq(2)
    queued = job.enqueue("queued", "p3", 2, at_ms=at).with_seq(3)
    views = project([done, running, queued])
    started = job.start(views["done"], at_ms=at + 1).with_seq(4)
    views = project([done, running, queued, started])
    finished = job.succeed(views["done"], at_ms=at + 2, duration_ms=1, result={"n": 1}).with_seq(5)
    running_started = job.start(views["running"], at_ms=at + 3).with_seq(6)
    events = [done, running, queued, started, finished, running_started]
    views = project(events)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for step in MIGRATIONS[:2]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.executemany(
            f"INSERT INTO kasp_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * 9)})",
            [event_row(e) for e in events],
        )
        conn.executemany(
            f"INSERT INTO kasp_jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * 16)})",
            [Rows(json_text=False).view_row(v) for v in views.values()],
        )
    finally:
        conn.close()
    return dict(views)


def test_a_schema_2_file_upgrades_keeping_every_job_and_event(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "kasp.db")
    before = _schema_2_file(path)
    h = StoreHarness(f"sqlite:///{path}")
    try:
        store = h.open()
        assert h.run(store.get_job("done")) == before["done"]
        assert h.run(store.get_job("queued")) == before["queued"]
        # The running attempt was cut off by the stop: recorded interrupted at open, as always.
        running = h.run(store.get_job("running"))
        assert running.state is JobState.QUEUED and running.version == 3
        assert [e.type for e in h.run(store.job_events("running")) or []][-1] is EventType.INTERRUPTED
        stats = h.run(store.stats())
        assert (stats.last_seq, stats.jobs[JobState.DONE], stats.jobs[JobState.QUEUED]) == (7, 1, 2)
        # Claim order (by ready time: the interrupted job is ready since its interruption) and the
        # seq continue on the new table.
        claimed = h.run(store.claim_ready(at_ms=now_ms(), limit=5))
        assert [v.id for v in claimed] == ["queued", "running"]
        view, created = h.run(store.enqueue(job.enqueue("new", "p", 0, at_ms=now_ms()), capacity=10))
        assert created and view.created_seq == 10
        page = h.run(store.list_jobs(state=None, limit=10, cursor=0))
        assert [v.id for v in page.jobs] == ["done", "running", "queued", "new"]
        h.close()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        finally:
            conn.close()
        assert {"kasp_jobs_claim", "kasp_jobs_queue", "kasp_jobs_state", "kasp_jobs_finished"} <= indexes
        store = h.open()  # opening again changes nothing
        assert h.run(store.get_job("done")) == before["done"]
    finally:
        h.close_all()
        h.loop.close()


#: query name -> the index its plan must search (every other query: no full scan of a table)
HOT = {
    "claimable": "kasp_jobs_claim",
    "count_delayed": "COVERING INDEX kasp_jobs_queue",  # once per admitting batch
    "next_due": "COVERING INDEX kasp_jobs_queue",
    "evictable": "kasp_jobs_finished",
    "running": "kasp_jobs_state",
    "list_jobs_in_state": "kasp_jobs_state",
    "update_job": "INTEGER PRIMARY KEY",
    "job_by_id": "sqlite_autoindex_kasp_jobs_1",
    "jobs_by_ids": "sqlite_autoindex_kasp_jobs_1",
}
#: read once at open; they count every row by nature
AT_OPEN = {"log_head", "count_by_state"}


def test_every_query_reads_through_an_index(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "kasp.db")
    h = StoreHarness(f"sqlite:///{path}")
    try:
        store = h.open(retain_finished=10**9)

        async def some_of_each() -> None:
            events = [job.enqueue(f"j{n}", "p", 0, at_ms=now_ms()) for n in range(300)]
            await store.enqueue_many(events, capacity=10**9)
            running = await store.claim_ready(at_ms=now_ms(), limit=100)
            await asyncio.gather(
                *(store.append(job.succeed(v, at_ms=now_ms(), duration_ms=0)) for v in running)
            )

        h.run(some_of_each())
        h.close()
        conn = sqlite3.connect(path)
        try:
            plans = {
                name: " | ".join(
                    r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + Q[name], [1] * Q[name].count("?"))
                )
                for name in Q.names()
                if not name.startswith("schema_") and name != "probe_write" and name not in AT_OPEN
            }
        finally:
            conn.close()
        for name, index in HOT.items():
            assert index in plans[name], (name, plans[name])
        assert "TEMP B-TREE" not in plans["evictable"]  # retention never sorts every finished job
        for name, plan in plans.items():
            assert not re.search(r"SCAN kasp_(jobs|events)(?! USING)", plan), (name, plan)
    finally:
        h.close_all()
        h.loop.close()
