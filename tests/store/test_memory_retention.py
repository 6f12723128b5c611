"""The memory store's own structures: compaction of evicted events, and listings that bound their scan.

Memory only: both test the memory store's in-process log (retention itself is checked on every
store in test_retention.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from domain import job
from domain.backoff import Backoff
from domain.projection import project
from domain.states import JobState
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
    (view,) = await store.claim_ready(at_ms=at_ms)
    assert view.id == job_id
    if fail:
        outcome = job.fail(view, error="e", at_ms=at_ms, duration_ms=0, policy=Backoff(1, 1), rng=Fixed())
    else:
        outcome = job.succeed(view, at_ms=at_ms, duration_ms=0)
    await store.append(outcome)


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
