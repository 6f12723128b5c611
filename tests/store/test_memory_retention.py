"""The memory store's own promises: bounded retention, admission, and reads that skip evicted jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from domain import job
from domain.backoff import Backoff
from domain.errors import QueueFull, UnknownJob, VersionConflict
from domain.projection import project
from domain.states import EventType, JobState
from service.store import memory
from service.store.memory import MemoryStore

T = TypeVar("T")
T0 = 1_000_000


class Fixed:
    def random(self) -> float:
        return 0.5


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def finish(store: MemoryStore, job_id: str, at_ms: int, *, fail: bool = False) -> None:
    await store.enqueue(job.enqueue(job_id, "p", 0, at_ms=at_ms), capacity=10**9)
    view = await store.claim_ready(at_ms=at_ms)
    assert view is not None and view.id == job_id
    if fail:
        outcome = job.fail(view, error="e", at_ms=at_ms, duration_ms=0, policy=Backoff(1, 1), rng=Fixed())
    else:
        outcome = job.succeed(view, at_ms=at_ms, duration_ms=0)
    await store.append(outcome)


def test_finished_jobs_beyond_retention_are_evicted_oldest_first_with_their_events() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=3)
        for i in range(5):
            await finish(store, f"j{i}", T0 + i)
        await store.enqueue(job.enqueue("pending", "p", 0, at_ms=T0), capacity=10)
        assert [await store.get_job(f"j{i}") is None for i in range(5)] == [True, True, False, False, False]
        assert await store.job_events("j0") is None
        events = await store.read_events(after=0, limit=1000, job_id=None, type=None)
        assert {e.job_id for e in events} == {"j2", "j3", "j4", "pending"}
        assert events[0].seq == 7  # /events starts at the oldest retained seq
        stats = await store.stats()
        assert stats.jobs[JobState.DONE] == 3 and stats.event_count == 10 and stats.last_seq == 16
        page = await store.list_jobs(state=None, limit=100, cursor=0)
        assert [v.id for v in page.jobs] == ["j2", "j3", "j4", "pending"]

    run(scenario())


def test_a_requeued_job_is_not_evicted_for_its_old_finish() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=1)
        await finish(store, "a", T0, fail=True)
        view = await store.get_job("a")
        assert view is not None
        await store.append(job.requeue(view, at_ms=T0 + 1))
        assert (await store.claim_ready(at_ms=T0 + 1)) is not None  # "a" is running again
        await finish(store, "b", T0 + 2)
        await finish(store, "c", T0 + 3)
        assert (await store.get_job("a")) is not None  # running again: not finished, not evictable
        assert (await store.get_job("b")) is None

    run(scenario())


def test_an_evicted_id_can_be_enqueued_again_as_a_new_job() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=0)
        await finish(store, "again", T0)
        assert await store.get_job("again") is None
        view, created = await store.enqueue(job.enqueue("again", "new", 0, at_ms=T0 + 5), capacity=10)
        assert created and view.payload == "new"
        events = await store.read_events(after=0, limit=100, job_id=None, type=None)
        assert [(e.type, e.data.get("payload")) for e in events] == [(EventType.ENQUEUED, "new")]

    run(scenario())


def test_memory_stays_bounded_under_sustained_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "COMPACT_MIN_DEAD", 10)

    async def scenario() -> None:
        store = MemoryStore(retain_finished=20)
        for i in range(2000):
            await finish(store, f"j{i}", T0 + i)
        assert len(store._log) <= 2 * 20 * 3 + 10  # compaction kept the log near the retained events
        assert len(store._jobs) == 20
        events = await store.read_events(after=0, limit=1000, job_id=None, type=None)
        live = {job_id: await store.get_job(job_id) for job_id in store._jobs}
        assert len(events) == 60 and project(events) == live

    run(scenario())


def test_admission_counts_ready_jobs_only_and_retries_enter_past_capacity() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=10)
        await store.enqueue(job.enqueue("r", "p", 1, at_ms=T0), capacity=1)
        running = await store.claim_ready(at_ms=T0)
        assert running is not None
        retry = job.fail(running, error="e", at_ms=T0, duration_ms=0, policy=Backoff(100, 100), rng=Fixed())
        await store.append(retry)  # due at T0 + 50
        await store.enqueue(job.enqueue("a", "p", 0, at_ms=T0 + 1), capacity=1)  # delayed r does not count
        with pytest.raises(QueueFull):
            await store.enqueue(job.enqueue("b", "p", 0, at_ms=T0 + 2), capacity=1)
        first = await store.claim_ready(at_ms=T0 + 60)  # r became due while the queue was full
        assert first is not None and first.id == "a"
        assert (await store.stats()).ready == 1
        second = await store.claim_ready(at_ms=T0 + 60)
        assert second is not None and (second.id, second.attempts) == ("r", 2)

    run(scenario())


def test_appends_check_the_version() -> None:
    async def scenario() -> None:
        store = MemoryStore(retain_finished=10)
        view, _ = await store.enqueue(job.enqueue("v", "p", 0, at_ms=T0), capacity=1)
        running = await store.claim_ready(at_ms=T0)
        assert running is not None
        with pytest.raises(VersionConflict):
            await store.append(job.start(view, at_ms=T0))  # decided from a stale view
        with pytest.raises(UnknownJob):
            await store.append(job.succeed(replace(running, id="x"), at_ms=T0, duration_ms=0))

    run(scenario())


def test_listing_bounds_the_work_of_one_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "LIST_SCAN_LIMIT", 10)

    async def scenario() -> None:
        store = MemoryStore(retain_finished=100)
        for i in range(12):
            await finish(store, f"d{i}", T0 + i)
        await store.enqueue(job.enqueue("q", "p", 0, at_ms=T0 + 99), capacity=10)
        page = await store.list_jobs(state=JobState.QUEUED, limit=5, cursor=0)
        assert page.jobs == [] and page.next_cursor == 10  # short page, keep going
        found = []
        cursor: int | None = 0
        while cursor is not None:
            page = await store.list_jobs(state=JobState.QUEUED, limit=5, cursor=cursor)
            found += [v.id for v in page.jobs]
            cursor = page.next_cursor
        assert found == ["q"]

    run(scenario())
