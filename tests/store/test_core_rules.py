"""Every rule of the store core (service/store/core.py), checked on every store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from domain import job
from domain.backoff import Backoff
from domain.errors import JobConflict, QueueFull
from domain.events import Event
from domain.states import EventType, JobState
from service.clock import now_ms
from service.engine import Engine, JobRequest
from service.store import EventStore
from service.store.core import same_request
from tests.store.conftest import StoreHarness

T0 = 1_000_000
BIG = 1_000_000


class Max:
    def random(self) -> float:
        return 1.0


def enqueued(job_id: str, payload: str = "p", max_retries: int = 0, at_ms: int = T0) -> Event:
    return job.enqueue(job_id, payload, max_retries, at_ms=at_ms)


def test_a_resend_with_the_same_content_is_the_same_job_and_other_content_a_conflict(
    store: EventStore, harness: StoreHarness
) -> None:
    engine = Engine(store, capacity=1, clock=now_ms)
    view, created = harness.run(engine.enqueue(JobRequest("a", "x", 2)))
    assert created and view.state is JobState.QUEUED
    again, created_again = harness.run(
        engine.enqueue(JobRequest("a", "x", 2))
    )  # the queue is full: still 200
    assert not created_again and again == view
    with pytest.raises(JobConflict):
        harness.run(engine.enqueue(JobRequest("a", "x", 3)))
    with pytest.raises(JobConflict):
        harness.run(engine.enqueue(JobRequest("a", "y", 2)))
    with pytest.raises(QueueFull):
        harness.run(engine.enqueue(JobRequest("b", "x", 2)))
    assert len(harness.run(store.read_events(after=0, limit=BIG, job_id=None, type=None))) == 1


def test_a_batched_claim_takes_up_to_its_limit_in_one_commit(
    store: EventStore, harness: StoreHarness
) -> None:
    for i in range(5):
        harness.run(store.enqueue(enqueued(f"j{i}", at_ms=T0 + i), capacity=100))
    claimed = harness.run(store.claim_ready(at_ms=T0 + 10, limit=3))
    assert [v.id for v in claimed] == ["j0", "j1", "j2"]
    assert all(v.state is JobState.RUNNING and v.attempts == 1 for v in claimed)
    started = harness.run(store.read_events(after=5, limit=BIG, job_id=None, type=None))
    assert [(e.seq, e.type, e.job_id) for e in started] == [
        (6, EventType.STARTED, "j0"),
        (7, EventType.STARTED, "j1"),
        (8, EventType.STARTED, "j2"),
    ]
    rest = harness.run(store.claim_ready(at_ms=T0 + 10, limit=10))
    assert [v.id for v in rest] == ["j3", "j4"]
    assert harness.run(store.claim_ready(at_ms=T0 + 10, limit=10)) == []


def test_concurrent_batched_claims_hand_each_job_to_exactly_one_caller(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue_many([enqueued(f"j{i}") for i in range(50)], capacity=100))

    async def claims() -> list[list[str]]:
        got = await asyncio.gather(*(store.claim_ready(at_ms=T0 + 1, limit=7) for _ in range(10)))
        return [[v.id for v in views] for views in got]

    per_caller = harness.run(claims())
    flat = [job_id for ids in per_caller for job_id in ids]
    assert sorted(flat) == sorted(f"j{i}" for i in range(50)) and len(flat) == len(set(flat))
    assert all(len(ids) <= 7 for ids in per_caller)
    started = harness.run(store.read_events(after=0, limit=BIG, job_id=None, type=EventType.STARTED))
    assert sorted(e.job_id for e in started) == sorted(flat)


def test_claims_take_jobs_in_the_order_they_became_ready(store: EventStore, harness: StoreHarness) -> None:
    harness.run(store.enqueue(enqueued("retried", max_retries=1, at_ms=T0), capacity=10))
    running = harness.claim_one(store, T0)
    assert running is not None
    retry = job.fail(running, error="e", at_ms=T0 + 1, duration_ms=1, policy=Backoff(100, 100), rng=Max())
    harness.run(store.append(retry))  # ready again at T0 + 101
    harness.run(store.enqueue(enqueued("early", at_ms=T0 + 50), capacity=10))
    harness.run(store.enqueue(enqueued("late", at_ms=T0 + 150), capacity=10))
    order = [harness.claim_one(store, T0 + 200) for _ in range(3)]
    assert [v.id for v in order if v is not None] == ["early", "retried", "late"]


def test_admission_counts_ready_jobs_only_and_a_due_retry_enters_past_capacity(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("r", max_retries=1, at_ms=T0), capacity=1))
    running = harness.claim_one(store, T0)
    assert running is not None
    retry = job.fail(running, error="e", at_ms=T0, duration_ms=0, policy=Backoff(100, 100), rng=Max())
    harness.run(store.append(retry))  # due at T0 + 100
    harness.run(store.enqueue(enqueued("a", at_ms=T0 + 1), capacity=1))  # the delayed retry holds no place
    with pytest.raises(QueueFull):
        harness.run(store.enqueue(enqueued("b", at_ms=T0 + 2), capacity=1))
    first = harness.claim_one(store, T0 + 200)  # r became due while the queue was full
    second = harness.claim_one(store, T0 + 200)
    assert first is not None and second is not None
    assert (first.id, second.id, second.attempts) == ("a", "r", 2)


def test_a_listener_that_raises_is_logged_and_breaks_neither_the_commit_nor_the_caller(
    store: EventStore, harness: StoreHarness, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(broken)
    store.add_listener(lambda e: heard.append(e.seq))
    with caplog.at_level(logging.ERROR, logger="kasp.store"):
        _, created = harness.run(asyncio.wait_for(store.enqueue(enqueued("a"), capacity=10), timeout=10))
        claimed = harness.run(asyncio.wait_for(store.claim_ready(at_ms=T0 + 1, limit=2), timeout=10))
    assert created and [v.id for v in claimed] == ["a"]
    assert heard == [1, 2]  # the listener after the broken one still hears every event
    assert harness.run(store.get_job("a")) == claimed[0]
    failures = [r for r in caplog.records if getattr(r, "action", None) == "listener_error"]
    assert len(failures) == 2 and "listener bug" in (failures[0].exc_text or "")


def test_enqueue_many_judges_each_job_as_if_sent_alone_and_commits_the_accepted_together(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("known", "old"), capacity=10))
    heard: list[int] = []
    store.add_listener(lambda e: heard.append(e.seq))
    batch = [enqueued("a"), enqueued("known", "new"), enqueued("b"), enqueued("a", "other"), enqueued("c")]
    outcomes = harness.run(store.enqueue_many(batch, capacity=3))
    a, known, b, a_again, c = outcomes
    assert isinstance(a, tuple) and a[1] and a[0].id == "a" and a[0].created_seq == 2
    assert isinstance(known, tuple) and not known[1] and known[0].payload == "old"
    assert isinstance(b, tuple) and b[1] and b[0].created_seq == 3
    assert (
        isinstance(a_again, tuple) and not a_again[1] and a_again[0] == a[0]
    )  # a re-send of the earlier one
    assert isinstance(c, QueueFull)  # known, a and b fill the queue of 3
    assert heard == [2, 3]
    assert harness.run(store.get_job("c")) is None
    stats = harness.run(store.stats())
    assert (stats.ready, stats.last_seq, stats.event_count) == (3, 3, 3)


def test_enqueue_many_of_only_known_or_refused_jobs_writes_nothing(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("known"), capacity=10))
    outcomes = harness.run(store.enqueue_many([enqueued("known"), enqueued("new")], capacity=1))
    assert isinstance(outcomes[0], tuple) and not outcomes[0][1]
    assert isinstance(outcomes[1], QueueFull)
    stats = harness.run(store.stats())
    assert (stats.last_seq, stats.event_count) == (1, 1)


def test_claims_take_higher_priority_first_then_the_order_jobs_became_ready(
    store: EventStore, harness: StoreHarness
) -> None:
    for i, (name, priority) in enumerate([("low", -5), ("a", 0), ("urgent", 50), ("b", 0), ("high", 10)]):
        event = job.enqueue(name, "p", 0, at_ms=T0 + i, priority=priority)
        harness.run(store.enqueue(event, capacity=10))
    claimed = harness.run(store.claim_ready(at_ms=T0 + 10, limit=3))
    rest = [harness.claim_one(store, T0 + 10) for _ in range(2)]
    assert [v.id for v in claimed] + [v.id for v in rest if v is not None] == [
        "urgent",
        "high",
        "a",
        "b",
        "low",
    ]
    assert [v.priority for v in claimed] == [50, 10, 0]


def test_a_scheduled_job_is_delayed_takes_no_queue_place_and_becomes_ready_when_due(
    store: EventStore, harness: StoreHarness
) -> None:
    later = job.enqueue("later", "p", 0, at_ms=T0, run_at_ms=T0 + 1000, timeout_ms=250)
    view, created = harness.run(store.enqueue(later, capacity=1))
    assert created and (view.next_attempt_at_ms, view.timeout_ms) == (T0 + 1000, 250)
    harness.run(store.enqueue(enqueued("now", at_ms=T0 + 1), capacity=1))  # the scheduled one holds no place
    assert harness.claim_one(store, T0 + 500) is not None
    assert harness.claim_one(store, T0 + 500) is None  # "later" is not due yet
    harness.run(store.enqueue(enqueued("full", at_ms=T0 + 2), capacity=1))
    due = harness.run(store.claim_ready(at_ms=T0 + 1000, limit=5))  # due even though the queue is full
    assert [v.id for v in due] == ["full", "later"] and due[1].timeout_ms == 250  # in ready_at order


def test_a_cancelled_job_is_never_claimed_counts_as_finished_and_can_be_requeued(
    store: EventStore, harness: StoreHarness
) -> None:
    harness.run(store.enqueue(enqueued("c"), capacity=10))
    harness.run(store.enqueue(enqueued("d", at_ms=T0 + 1), capacity=10))
    queued = harness.run(store.get_job("c"))
    assert queued is not None
    cancelled = harness.run(store.append(job.cancel(queued, at_ms=T0 + 2)))
    assert cancelled.state is JobState.CANCELLED
    stats = harness.run(store.stats())
    assert (stats.ready, stats.jobs[JobState.CANCELLED], stats.jobs[JobState.QUEUED]) == (1, 1, 1)
    assert [v.id for v in harness.run(store.claim_ready(at_ms=T0 + 3, limit=5))] == ["d"]
    again = harness.run(store.append(job.requeue(cancelled, at_ms=T0 + 4)))
    assert again.state is JobState.QUEUED
    (running,) = harness.run(store.claim_ready(at_ms=T0 + 5, limit=5))
    assert running.id == "c" and running.attempts == 1
    done = harness.run(
        store.append(job.succeed(running, at_ms=T0 + 6, duration_ms=1, result={"n": [1, "x"]}))
    )
    assert harness.run(store.get_job("c")) == done and done.result == {"n": [1, "x"]}
    stats = harness.run(store.stats())
    assert stats.jobs[JobState.CANCELLED] == 0 and stats.jobs[JobState.DONE] == 1


def test_a_resend_differing_in_priority_or_timeout_is_a_conflict(
    store: EventStore, harness: StoreHarness
) -> None:
    first = job.enqueue("a", "x", 1, at_ms=T0, priority=5, timeout_ms=100)
    view, _ = harness.run(store.enqueue(first, capacity=10))
    assert same_request(
        view, job.enqueue("a", "x", 1, at_ms=T0 + 1, priority=5, timeout_ms=100, run_at_ms=T0 + 9)
    )
    assert not same_request(view, job.enqueue("a", "x", 1, at_ms=T0 + 1, priority=6, timeout_ms=100))
    assert not same_request(view, job.enqueue("a", "x", 1, at_ms=T0 + 1, priority=5))
