"""The store contract (service/store/base.py, the rules of service/store/core.py), on every store."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from domain import job
from domain.backoff import Backoff
from domain.errors import QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.projection import project
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store import EventStore
from tests.store.conftest import StoreHarness

BIG = 1_000_000


def enqueued(job_id: str, payload: str = "p", max_retries: int = 0) -> Event:
    return job.enqueue(job_id, payload, max_retries, at_ms=now_ms())


async def all_events(store: EventStore) -> list[Event]:
    return await store.read_events(after=0, limit=BIG, job_id=None, type=None)


def test_enqueue_creates_a_queued_job_with_seq_1_and_a_resend_returns_it(
    store: EventStore, harness: StoreHarness
) -> None:
    view, created = harness.run(store.enqueue(enqueued("a", "x", 2), capacity=10))
    assert created and view.state is JobState.QUEUED and view.created_seq == 1 and view.version == 1
    again, created_again = harness.run(store.enqueue(enqueued("a", "other", 5), capacity=10))
    assert not created_again and again == view  # the engine compares content for 200/409
    events = harness.run(all_events(store))
    assert [(e.seq, e.type, e.job_id, dict(e.data)) for e in events] == [
        (
            1,
            EventType.ENQUEUED,
            "a",
            {"payload": "x", "max_retries": 2, "priority": 0, "timeout_ms": None, "run_at": None},
        )
    ]


def test_a_full_queue_refuses_new_ids_and_writes_nothing_but_answers_known_ones(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("a"), capacity=2))
    harness.run(store.enqueue(enqueued("b"), capacity=2))
    with pytest.raises(QueueFull):
        harness.run(store.enqueue(enqueued("c"), capacity=2))
    view, created = harness.run(store.enqueue(enqueued("a"), capacity=2))
    assert (view.id, created) == ("a", False)
    assert harness.run(store.get_job("c")) is None
    stats = harness.run(store.stats())
    assert (stats.ready, stats.last_seq, stats.event_count) == (2, 2, 2)


def test_claims_take_the_oldest_ready_job_and_hand_each_to_one_caller(
    store: EventStore, harness: StoreHarness
) -> None:
    for i in range(8):
        harness.run(store.enqueue(enqueued(f"j{i}"), capacity=100))

    async def claim_all() -> list[str | None]:
        views = await asyncio.gather(*(store.claim_ready(at_ms=now_ms()) for _ in range(12)))
        return [v[0].id if v else None for v in views]

    claimed = harness.run(claim_all())
    ids = [c for c in claimed if c is not None]
    assert sorted(ids) == [f"j{i}" for i in range(8)] and claimed.count(None) == 4
    started = harness.run(store.read_events(after=0, limit=BIG, job_id=None, type=EventType.STARTED))
    assert sorted(e.job_id for e in started) == sorted(ids) and {e.attempt for e in started} == {1}
    assert harness.claim_one(store) is None
    assert harness.run(store.stats()).jobs[JobState.RUNNING] == 8


def test_claims_follow_enqueue_order(store: EventStore, harness: StoreHarness) -> None:
    t = now_ms()
    for i, name in enumerate(["first", "second", "third"]):
        harness.run(store.enqueue(job.enqueue(name, "", 0, at_ms=t + i), capacity=10))
    order = [harness.claim_one(store, t + 10) for _ in range(3)]
    assert [v.id for v in order if v is not None] == ["first", "second", "third"]


def test_a_stale_version_is_refused_and_an_unknown_job_is_reported(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("a"), capacity=10))
    running = harness.claim_one(store)
    assert running is not None
    harness.run(store.append(job.succeed(running, at_ms=now_ms(), duration_ms=1)))
    with pytest.raises(VersionConflict):  # a second outcome for the same attempt
        harness.run(store.append(job.interrupt(running, at_ms=now_ms(), reason="test")))
    ghost = dataclasses.replace(job.succeed(running, at_ms=now_ms(), duration_ms=1), job_id="ghost")
    with pytest.raises(UnknownJob):
        harness.run(store.append(ghost))
    assert [e.type for e in harness.run(store.job_events("a")) or []] == [
        EventType.ENQUEUED,
        EventType.STARTED,
        EventType.SUCCEEDED,
    ]
    assert harness.run(store.job_events("ghost")) is None


def test_a_delayed_retry_is_not_ready_until_due_and_does_not_count_against_capacity(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("a", max_retries=1), capacity=1))
    running = harness.claim_one(store)
    assert running is not None
    policy = Backoff(60_000, 60_000)

    class Max:
        def random(self) -> float:
            return 1.0

    retry = job.fail(running, error="boom", at_ms=now_ms(), duration_ms=1, policy=policy, rng=Max())
    view = harness.run(store.append(retry))
    assert view.state is JobState.QUEUED and view.next_attempt_at_ms == retry.at_ms + 60_000
    assert harness.claim_one(store) is None
    assert harness.run(store.next_due_ms()) == view.next_attempt_at_ms
    stats = harness.run(store.stats())
    assert (stats.ready, stats.delayed, stats.jobs[JobState.QUEUED]) == (0, 1, 1)
    harness.run(store.enqueue(enqueued("b"), capacity=1))  # the waiting retry holds no queue slot
    later = view.next_attempt_at_ms + 1
    claimed = {v.id: v for v in (harness.claim_one(store, later) for _ in range(2)) if v is not None}
    assert sorted(claimed) == ["a", "b"] and claimed["a"].attempts == 2


def test_reads_page_filter_and_replay_to_the_live_projection(
    store: EventStore, harness: StoreHarness
) -> None:
    for i in range(5):
        harness.run(store.enqueue(enqueued(f"j{i}"), capacity=100))
    for _ in range(3):
        running = harness.claim_one(store)
        assert running is not None
        harness.run(store.append(job.succeed(running, at_ms=now_ms(), duration_ms=1)))
    events = harness.run(all_events(store))
    assert [e.seq for e in events] == list(range(1, 12))
    page1 = harness.run(store.read_events(after=0, limit=4, job_id=None, type=None))
    page2 = harness.run(store.read_events(after=page1[-1].seq, limit=4, job_id=None, type=None))
    assert [e.seq for e in page1 + page2] == list(range(1, 9))
    assert [e.job_id for e in harness.run(store.read_events(after=0, limit=10, job_id="j1", type=None))] == [
        "j1"
    ] * 3
    done = harness.run(store.read_events(after=0, limit=10, job_id=None, type=EventType.SUCCEEDED))
    assert [e.job_id for e in done] == ["j0", "j1", "j2"]
    listing = harness.run(store.list_jobs(state=None, limit=3, cursor=0))
    rest = harness.run(store.list_jobs(state=None, limit=3, cursor=listing.next_cursor or 0))
    assert [v.id for v in listing.jobs + rest.jobs] == [
        f"j{i}" for i in range(5)
    ] and rest.next_cursor is None
    queued = harness.run(store.list_jobs(state=JobState.QUEUED, limit=10, cursor=0))
    assert [v.id for v in queued.jobs] == ["j3", "j4"]
    replayed = project(events)
    for job_id, view in replayed.items():
        assert harness.run(store.get_job(job_id)) == view
    assert harness.run(store.unfinished_job_ids()) == ["j3", "j4"]
    stats = harness.run(store.stats())
    assert {s: stats.jobs.get(s, 0) for s in JobState} == {  # a state with no jobs may be left out
        JobState.QUEUED: 2,
        JobState.RUNNING: 0,
        JobState.DONE: 3,
        JobState.FAILED: 0,
        JobState.CANCELLED: 0,
    }
    assert (stats.event_count, stats.last_seq) == (11, 11)


def test_listeners_hear_every_committed_event_in_seq_order(store: EventStore, harness: StoreHarness) -> None:
    heard: list[int] = []
    store.add_listener(lambda e: heard.append(e.seq))
    harness.run(store.enqueue(enqueued("a"), capacity=10))
    running = harness.claim_one(store)
    assert running is not None
    with pytest.raises(QueueFull):
        harness.run(store.enqueue(enqueued("b"), capacity=0))
    harness.run(store.append(job.succeed(running, at_ms=now_ms(), duration_ms=1)))
    assert heard == [1, 2, 3]


def test_concurrent_enqueues_all_commit_with_distinct_seqs(store: EventStore, harness: StoreHarness) -> None:
    async def flood() -> None:
        await asyncio.gather(*(store.enqueue(enqueued(f"j{i}"), capacity=BIG) for i in range(200)))

    harness.run(flood())
    events = harness.run(all_events(store))
    assert [e.seq for e in events] == list(range(1, 201))
    assert sorted(e.job_id for e in events) == sorted(f"j{i}" for i in range(200))
