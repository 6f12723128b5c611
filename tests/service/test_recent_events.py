"""The feed's ring of recent events: it answers a cursor only when it holds every event after it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.events import NO_DATA, Event
from domain.results import MAX_RESULT_BYTES
from domain.states import EventType, JobState
from service.recent_events import EVENT_BYTES, RecentEvents, weight


def event(seq: int, data: Mapping[str, Any] = NO_DATA) -> Event:
    return Event(EventType.STARTED, f"j{seq}", 0, JobState.QUEUED, JobState.RUNNING, 1, 2, data, seq)


def seqs(events: list[Event] | None) -> list[int] | None:
    return None if events is None else [e.seq for e in events]


def test_a_cursor_inside_the_run_gets_the_events_after_it_up_to_the_limit() -> None:
    ring = RecentEvents()
    for seq in range(11, 21):
        ring.append(event(seq))
    assert seqs(ring.after(10, 100)) == list(range(11, 21))
    assert seqs(ring.after(14, 3)) == [15, 16, 17]
    assert seqs(ring.after(19, 100)) == [20]


def test_a_cursor_it_cannot_answer_for_goes_to_the_store() -> None:
    ring = RecentEvents()
    assert ring.after(0, 10) is None  # nothing held
    for seq in range(11, 21):
        ring.append(event(seq))
    assert ring.after(9, 10) is None  # seq 10 is not here: older than the run
    assert ring.after(20, 10) is None  # nothing after it here; another instance's may follow
    assert ring.after(25, 10) is None


def test_a_hole_in_the_seqs_starts_a_new_run() -> None:
    ring = RecentEvents()
    for seq in (1, 2, 3, 5, 6):  # seq 4 was committed elsewhere (another instance)
        ring.append(event(seq))
    assert ring.after(2, 10) is None, "the ring must not skip seq 4"
    assert ring.after(3, 10) is None
    assert seqs(ring.after(4, 10)) == [5, 6]
    ring.append(event(6))  # a repeat is no continuation either
    assert seqs(ring.after(5, 10)) == [6] and len(ring) == 1
    ring.append(event(3))  # nor an older seq
    assert seqs(ring.after(2, 10)) == [3] and ring.after(3, 10) is None


def test_large_payloads_are_dropped_to_stay_within_the_bytes_bound() -> None:
    bound = 64 * 1024
    ring = RecentEvents(max_bytes=bound)
    payload = "x" * (20 * 1024)
    for seq in range(1, 101):
        ring.append(event(seq, {"payload": payload}))
        assert len(ring) * (len(payload) + EVENT_BYTES) <= bound
    assert len(ring) >= 1  # still serves the newest
    newest = ring.after(100 - len(ring), 100)
    assert seqs(newest) == list(range(101 - len(ring), 101))
    assert ring.after(99 - len(ring), 100) is None  # dropped: the store has them


def test_an_event_larger_than_the_bound_is_not_kept_but_the_run_goes_on() -> None:
    ring = RecentEvents(max_bytes=10 * 1024)
    ring.append(event(1))
    ring.append(event(2, {"payload": "x" * (100 * 1024)}))
    assert len(ring) == 0 and ring.after(1, 10) is None
    ring.append(event(3))
    assert seqs(ring.after(2, 10)) == [3]


def test_the_count_is_bounded_too_and_the_newest_are_kept() -> None:
    ring = RecentEvents(max_bytes=100 * EVENT_BYTES)
    for seq in range(1, 100_001):
        ring.append(event(seq))
    assert 0 < len(ring) <= 100
    assert seqs(ring.after(100_000 - len(ring), 1000)) == list(range(100_001 - len(ring), 100_001))


def test_weight_counts_what_can_be_large() -> None:
    assert weight(event(1)) == EVENT_BYTES
    assert weight(event(1, {"payload": "p" * 1000, "max_retries": 3})) == EVENT_BYTES + 1000
    assert weight(event(1, {"duration_ms": 5, "result": "r" * 10})) == EVENT_BYTES + 10
    assert weight(event(1, {"duration_ms": 5, "result": {"a": [1]}})) == EVENT_BYTES + MAX_RESULT_BYTES
    assert weight(event(1, {"duration_ms": 5, "result": 7})) == EVENT_BYTES
    assert weight(event(1, {"error": "e" * 99, "reason": "error"})) == EVENT_BYTES + 99


def test_clear_forgets_everything() -> None:
    ring = RecentEvents()
    for seq in range(1, 5):
        ring.append(event(seq))
    ring.clear()
    assert len(ring) == 0 and ring.after(1, 10) is None
    ring.append(event(9))  # any seq starts the next run
    assert seqs(ring.after(8, 10)) == [9]
