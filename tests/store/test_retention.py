"""Retention on every store: finished jobs beyond RETAIN_FINISHED are evicted, oldest finished
first, with their events; reads start at the oldest retained seq."""

from __future__ import annotations

import asyncio
import time

from domain import job
from domain.backoff import Backoff
from domain.projection import project
from domain.states import EventType, JobState
from service.store import EventStore
from tests.store.conftest import StoreHarness

T0 = 1_000_000


class Fixed:
    def random(self) -> float:
        return 0.5


async def finish(store: EventStore, job_id: str, at_ms: int, *, fail: bool = False) -> None:
    await store.enqueue(job.enqueue(job_id, "p", 0, at_ms=at_ms), capacity=10**9)
    (view,) = await store.claim_ready(at_ms=at_ms)
    assert view.id == job_id
    if fail:
        outcome = job.fail(view, error="e", at_ms=at_ms, duration_ms=0, policy=Backoff(1, 1), rng=Fixed())
    else:
        outcome = job.succeed(view, at_ms=at_ms, duration_ms=0)
    await store.append(outcome)


def settle(harness: StoreHarness, store: EventStore, *, finished: int, timeout_s: float = 10.0) -> None:
    """Wait (with a deadline) until retention has brought the finished jobs down to `finished`:
    the SQL stores evict in a step after the commit that went over."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = harness.run(store.stats())
        if sum(stats.jobs[s] for s in (JobState.DONE, JobState.FAILED)) == finished:
            return
        assert time.monotonic() < deadline, f"retention did not settle at {finished}: {stats}"
        harness.run(asyncio.sleep(0.005))


def test_finished_jobs_beyond_retention_are_evicted_oldest_first_with_their_events(
    harness: StoreHarness,
) -> None:
    store = harness.open(retain_finished=3)
    for i in range(5):
        harness.run(finish(store, f"j{i}", T0 + i, fail=i == 4))
    harness.run(store.enqueue(job.enqueue("pending", "p", 0, at_ms=T0), capacity=10))
    settle(harness, store, finished=3)
    assert [harness.run(store.get_job(f"j{i}")) is None for i in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert harness.run(store.job_events("j0")) is None
    events = harness.run(store.read_events(after=0, limit=1000, job_id=None, type=None))
    assert {e.job_id for e in events} == {"j2", "j3", "j4", "pending"}
    assert events[0].seq == 7  # /events starts at the oldest retained seq
    stats = harness.run(store.stats())
    assert (stats.jobs[JobState.DONE], stats.jobs[JobState.FAILED]) == (2, 1)
    assert (stats.event_count, stats.last_seq) == (10, 16)
    page = harness.run(store.list_jobs(state=None, limit=100, cursor=0))
    assert [v.id for v in page.jobs] == ["j2", "j3", "j4", "pending"]
    assert project(events) == {v.id: v for v in page.jobs}


def test_a_requeued_job_is_not_evicted_for_its_old_finish(harness: StoreHarness) -> None:
    store = harness.open(retain_finished=1)
    harness.run(finish(store, "a", T0, fail=True))
    view = harness.run(store.get_job("a"))
    assert view is not None
    harness.run(store.append(job.requeue(view, at_ms=T0 + 1)))
    assert harness.claim_one(store, T0 + 1) is not None  # "a" is running again
    harness.run(finish(store, "b", T0 + 2))
    harness.run(finish(store, "c", T0 + 3))
    settle(harness, store, finished=1)
    assert harness.run(store.get_job("a")) is not None  # running again: not finished, not evictable
    assert harness.run(store.get_job("b")) is None


def test_an_evicted_id_can_be_enqueued_again_as_a_new_job(harness: StoreHarness) -> None:
    store = harness.open(retain_finished=0)
    harness.run(finish(store, "again", T0))
    settle(harness, store, finished=0)
    assert harness.run(store.get_job("again")) is None
    view, created = harness.run(store.enqueue(job.enqueue("again", "new", 0, at_ms=T0 + 5), capacity=10))
    assert created and view.payload == "new"
    events = harness.run(store.read_events(after=0, limit=100, job_id=None, type=None))
    assert [(e.type, e.data.get("payload")) for e in events] == [(EventType.ENQUEUED, "new")]


def test_the_log_stays_bounded_under_sustained_load(harness: StoreHarness) -> None:
    store = harness.open(retain_finished=20)

    async def load() -> None:
        for i in range(0, 600, 20):  # 20 jobs at a time, as a busy service runs them
            batch = [job.enqueue(f"j{n}", "p", 0, at_ms=T0 + n) for n in range(i, i + 20)]
            await store.enqueue_many(batch, capacity=10**9)
            running = await store.claim_ready(at_ms=T0 + i + 20, limit=20)
            await asyncio.gather(
                *(store.append(job.succeed(v, at_ms=T0 + i + 20, duration_ms=0)) for v in running)
            )

    harness.run(load())
    settle(harness, store, finished=20)
    stats = harness.run(store.stats())
    assert (stats.event_count, stats.last_seq) == (60, 1800)
    events = harness.run(store.read_events(after=0, limit=1000, job_id=None, type=None))
    assert len(events) == 60 and {e.job_id for e in events} == {f"j{n}" for n in range(580, 600)}
