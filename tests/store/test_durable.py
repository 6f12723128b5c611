"""What only the durable stores promise: reopening, recovery, leases, exclusive claims across instances.

Memory is left out on purpose: it has no file to reopen, no previous process to recover from,
and no second instance to share a queue with."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from domain import job
from domain.errors import VersionConflict
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.base import SharedStore
from service.store.sqlite import StoreBusy
from tests.store.conftest import StoreHarness


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'kasp.db')}"
    url: str = request.getfixturevalue("fresh_pg")
    return url


@pytest.fixture
def durable(durable_url: str) -> StoreHarness:
    h = StoreHarness(durable_url)
    yield h  # type: ignore[misc]
    h.close_all()
    h.loop.close()


def test_a_reopened_store_has_every_job_and_continues_the_seq(durable: StoreHarness) -> None:
    store = durable.open()
    for i in range(3):
        durable.run(store.enqueue(job.enqueue(f"j{i}", "p", 1, at_ms=now_ms()), capacity=10))
    running = durable.claim_one(store)
    assert running is not None
    durable.run(store.append(job.succeed(running, at_ms=now_ms(), duration_ms=1)))
    before = [durable.run(store.get_job(f"j{i}")) for i in range(3)]
    durable.close()

    store = durable.open()  # opening again: the schema step is idempotent
    assert [durable.run(store.get_job(f"j{i}")) for i in range(3)] == before
    view, created = durable.run(store.enqueue(job.enqueue("j3", "p", 0, at_ms=now_ms()), capacity=10))
    assert created and view.created_seq == 6
    stats = durable.run(store.stats())
    assert {s: stats.jobs.get(s, 0) for s in JobState} == {  # a state with no jobs may be left out
        JobState.QUEUED: 3,
        JobState.RUNNING: 0,
        JobState.DONE: 1,
        JobState.FAILED: 0,
        JobState.CANCELLED: 0,
    }
    assert (stats.last_seq, stats.event_count) == (6, 6)


def test_sqlite_interrupts_attempts_left_running_by_the_previous_process(tmp_path: os.PathLike[str]) -> None:
    h = StoreHarness(f"sqlite:///{os.path.join(tmp_path, 'kasp.db')}")
    try:
        store = h.open()
        h.run(store.enqueue(job.enqueue("a", "p", 0, at_ms=now_ms()), capacity=10))
        assert h.claim_one(store) is not None
        h.close()
        store = h.open()
        events = h.run(store.job_events("a")) or []
        assert [(e.type, e.attempt) for e in events] == [
            (EventType.ENQUEUED, None),
            (EventType.STARTED, 1),
            (EventType.INTERRUPTED, 1),
        ]
        assert events[-1].data == {"reason": "restart"}
        view = h.claim_one(store)
        assert view is not None and view.attempts == 2 and view.attempts_left == 0
    finally:
        h.close_all()
        h.loop.close()


def test_sqlite_refuses_a_second_process_on_the_same_file(tmp_path: os.PathLike[str]) -> None:
    url = f"sqlite:///{os.path.join(tmp_path, 'kasp.db')}"
    h = StoreHarness(url)
    try:
        h.open()
        with pytest.raises(StoreBusy, match="another kasp process"):
            h.another()
    finally:
        h.close_all()
        h.loop.close()


def test_an_expired_lease_is_recovered_as_interrupted_and_the_late_outcome_refused(fresh_pg: str) -> None:
    h = StoreHarness(fresh_pg)
    try:
        a = h.open(lease_timeout_s=1.0)
        b = h.another(lease_timeout_s=1.0)
        assert isinstance(a, SharedStore) and a.instance_id != b.instance_id
        h.run(a.enqueue(job.enqueue("kept", "p", 0, at_ms=now_ms()), capacity=10))
        h.run(a.enqueue(job.enqueue("lost", "p", 0, at_ms=now_ms()), capacity=10))
        kept = h.claim_one(a)
        lost = h.claim_one(a)
        assert kept is not None and lost is not None
        assert h.run(b.recover_expired()) == 0  # leases still valid

        deadline = time.monotonic() + 10
        recovered = 0
        while recovered == 0 and time.monotonic() < deadline:
            assert h.run(a.renew_leases([kept.id])) == 1  # a keeps only one lease alive
            recovered = h.run(b.recover_expired())
            h.run(asyncio.sleep(0.1))
        assert recovered == 1
        events = h.run(b.job_events("lost")) or []
        assert [e.type for e in events][-1] is EventType.INTERRUPTED
        assert events[-1].data == {"reason": "lease_expired"}
        with pytest.raises(VersionConflict):  # a's outcome for the lost attempt comes too late
            h.run(a.append(job.succeed(lost, at_ms=now_ms(), duration_ms=1)))
        h.run(a.append(job.succeed(kept, at_ms=now_ms(), duration_ms=1)))
        again = h.claim_one(b)
        assert again is not None and (again.id, again.attempts) == ("lost", 2)
    finally:
        h.close_all()
        h.loop.close()


def test_two_instances_claiming_together_take_each_job_once(fresh_pg: str) -> None:
    h = StoreHarness(fresh_pg)
    try:
        a = h.open()
        b = h.another()
        woken: list[EventType] = []
        b.add_remote_listener(lambda type_, due, job_id: woken.append(type_))
        for i in range(40):
            h.run(a.enqueue(job.enqueue(f"j{i}", "p", 0, at_ms=now_ms()), capacity=100))

        async def claim_until_empty(store: SharedStore) -> list[str]:
            ids = []
            while views := await store.claim_ready(at_ms=now_ms(), limit=3):
                ids.extend(v.id for v in views)
            return ids

        async def both() -> list[list[str]]:
            return await asyncio.gather(*(claim_until_empty(s) for s in (a, b, a, b)))

        claims = h.run(both())
        flat = [i for ids in claims for i in ids]
        assert sorted(flat) == sorted(f"j{i}" for i in range(40))
        started = h.run(a.read_events(after=0, limit=1000, job_id=None, type=EventType.STARTED))
        assert len(started) == 40
        deadline = time.monotonic() + 5
        while EventType.ENQUEUED not in woken and time.monotonic() < deadline:
            h.run(asyncio.sleep(0.02))  # notifications arrive on b's LISTEN connection
        assert EventType.ENQUEUED in woken
    finally:
        h.close_all()
        h.loop.close()


def test_a_schema_2_database_upgrades_and_notifications_then_name_the_job(fresh_pg: str) -> None:
    import asyncpg

    from service.store.postgres import MIGRATIONS, SCHEMA_VERSION, Q

    async def install_schema_2() -> None:  # what a kasp from before notifications named the job left behind
        conn = await asyncpg.connect(fresh_pg)
        try:
            await conn.execute(Q.schema_table)
            for step in (0, 1):
                await conn.execute(MIGRATIONS[step])
                await conn.execute(Q.schema_record, step + 1)
        finally:
            await conn.close()

    h = StoreHarness(fresh_pg)
    try:
        h.run(install_schema_2())
        a = h.open()
        b = h.another()
        heard: list[tuple[EventType, int | None, str]] = []
        b.add_remote_listener(lambda type_, due, job_id: heard.append((type_, due, job_id)))
        at = now_ms()
        h.run(a.enqueue(job.enqueue("now", "p", 0, at_ms=at), capacity=10))
        h.run(a.enqueue(job.enqueue("later", "p", 0, at_ms=at, run_at_ms=at + 60_000), capacity=10))
        deadline = time.monotonic() + 10
        while len(heard) < 2 and time.monotonic() < deadline:
            h.run(asyncio.sleep(0.01))
        assert heard == [(EventType.ENQUEUED, None, "now"), (EventType.ENQUEUED, at + 60_000, "later")]

        async def version() -> int:
            conn = await asyncpg.connect(fresh_pg)
            try:
                found: int = await conn.fetchval(Q.schema_version)
                return found
            finally:
                await conn.close()

        assert h.run(version()) == SCHEMA_VERSION  # every later step ran too
    finally:
        h.close_all()
        h.loop.close()
