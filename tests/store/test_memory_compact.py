"""The memory store keeps events in a compact form: what comes back out must be what went in.

Memory only: the tuple encoding it checks is the memory store's own (SQL rows are checked in
test_contract.py and test_strings.py on every store)."""

from __future__ import annotations

import asyncio
import gc
import random

from domain import job
from domain.backoff import Backoff
from domain.events import Event
from domain.projection import JobView, project
from domain.states import EventType
from service.store.memory import MemoryStore

POLICY = Backoff(base_ms=10, max_ms=100)
#: What the jobs return, by job number: objects and arrays are kept encoded, the rest as they are.
RESULTS = [None, {"n": [1, "x"], "é": {"deep": [None, 2.5]}}, [True, False, {}], "text", 7, 0.1, []]


async def _run_jobs(store: MemoryStore, n: int) -> list[Event]:
    """Enqueue n jobs and drive each through retries, failures, a requeue and success."""
    committed: list[Event] = []
    store.add_listener(committed.append)
    rng = random.Random(7)
    at = 1_700_000_000_000
    for i in range(n):
        await store.enqueue(job.enqueue(f"j{i}", f"payload {i}", 2, at_ms=at), capacity=10**6)
    for round_ in range(6):
        at += 1000
        while claimed := await store.claim_ready(at_ms=at):
            (view,) = claimed
            if (view.attempts + round_) % 3 == 0:
                result = RESULTS[int(view.id[1:]) % len(RESULTS)]
                await store.append(job.succeed(view, at_ms=at, duration_ms=5, result=result))
            else:
                event = job.fail(view, error="boom", at_ms=at, duration_ms=7, policy=POLICY, rng=rng)
                await store.append(event)
                if event.type is EventType.FAILED:
                    failed = await store.get_job(view.id)
                    assert failed is not None
                    await store.append(job.requeue(failed, at_ms=at))
    return committed


def test_events_read_back_equal_the_events_committed() -> None:
    store = MemoryStore(retain_finished=1000)
    committed = asyncio.run(_run_jobs(store, 30))
    read = asyncio.run(store.read_events(after=0, limit=10_000, job_id=None, type=None))
    assert read == committed
    for job_id in {e.job_id for e in committed}:
        assert asyncio.run(store.job_events(job_id)) == [e for e in committed if e.job_id == job_id]
    assert all(isinstance(e.type, EventType) for e in read)


def test_replaying_the_log_rebuilds_the_live_views() -> None:
    store = MemoryStore(retain_finished=1000)
    asyncio.run(_run_jobs(store, 30))
    events = asyncio.run(store.read_events(after=0, limit=10_000, job_id=None, type=None))
    for job_id, view in project(events).items():
        assert asyncio.run(store.get_job(job_id)) == view


def test_one_young_collection_untracks_every_retained_job_and_event() -> None:
    store = MemoryStore(retain_finished=1000)
    gc.collect()  # the store's own dicts and lists are old now, as in a running service
    gc.disable()  # so the jobs' tuples are all still young when the one collection below runs
    try:
        asyncio.run(_run_jobs(store, 14))
        gc.collect(0)
    finally:
        gc.enable()
    # A collection untracks a tuple only if what it holds is untracked already, and looks at a
    # tuple reached only through another one after it: flat tuples held from the store's own
    # dicts and lists are all untracked by this one pass, object and array results included.
    assert not any(gc.is_tracked(stored) for stored in store._log)
    assert not any(gc.is_tracked(kept) for kept in store._jobs.values())
    done = [v for v in asyncio.run(_views(store)) if v.result is not None]
    assert {type(v.result) for v in done} >= {dict, list, str, int, float}
    assert all(v.result == RESULTS[int(v.id[1:]) % len(RESULTS)] for v in done)


async def _views(store: MemoryStore) -> list[JobView]:
    return [view for job_id in store._jobs if (view := await store.get_job(job_id)) is not None]


async def _finish(store: MemoryStore, job_id: str, at: int) -> None:
    await store.enqueue(job.enqueue(job_id, "p", 0, at_ms=at), capacity=100)
    (view,) = await store.claim_ready(at_ms=at)
    assert view is not None and view.id == job_id
    await store.append(job.succeed(view, at_ms=at, duration_ms=1))


def test_finished_jobs_beyond_retention_are_evicted_oldest_first_with_their_events() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=2)
        for i in range(5):
            await _finish(store, f"j{i}", 1_700_000_000_000 + i)
        assert [await store.get_job(f"j{i}") is not None for i in range(5)] == [
            False,
            False,
            False,
            True,
            True,
        ]
        assert await store.job_events("j0") is None
        events = await store.read_events(after=0, limit=100, job_id=None, type=None)
        assert [e.job_id for e in events] == ["j3"] * 3 + ["j4"] * 3  # starts at the oldest retained seq
        assert events[0].seq == 10
        stats = await store.stats()
        assert (stats.event_count, stats.last_seq) == (6, 15)
        # An evicted id is free again: enqueuing it makes a new job.
        view, created = await store.enqueue(job.enqueue("j0", "again", 0, at_ms=1), capacity=100)
        assert created and view.payload == "again"

    asyncio.run(scenario())
