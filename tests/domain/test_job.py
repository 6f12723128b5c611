"""Commands decide a move and return its event; refused moves return nothing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from domain import job
from domain.backoff import Backoff
from domain.errors import InvalidTransition
from domain.events import Event
from domain.projection import JobView, ProjectionError, apply, project
from domain.states import EventType, JobState

T0 = 1_764_381_679_000  # 2025-11-29T02:01:19.000Z
POLICY = Backoff(base_ms=100, max_ms=1000)


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def numbered(events: list[Event]) -> list[Event]:
    """Give events the seqs a store would."""
    from dataclasses import replace

    return [replace(e, seq=i) for i, e in enumerate(events, start=1)]


class Script:
    """Builds a job's log one command at a time, the way the service does."""

    def __init__(self, job_id: str = "a", max_retries: int = 0) -> None:
        self.events = numbered([job.enqueue(job_id, "payload", max_retries, at_ms=T0)])
        self.view = apply(None, self.events[0])
        self.t = T0

    def do(self, command: Callable[..., Event], **kwargs: object) -> Event:
        self.t += 10
        event = command(self.view, at_ms=self.t, **kwargs)
        from dataclasses import replace

        event = replace(event, seq=len(self.events) + 1)
        self.events.append(event)
        self.view = apply(self.view, event)
        return event

    def fail(self, r: float = 0.5) -> Event:
        return self.do(job.fail, error="boom", duration_ms=3, policy=POLICY, rng=Fixed(r))

    def types(self) -> list[str]:
        return [e.type.value for e in self.events]


def test_enqueue_creates_a_queued_job_carrying_payload_and_max_retries() -> None:
    event = job.enqueue("task-123", "hello", 5, at_ms=T0)
    assert (event.type, event.from_state, event.to_state, event.version) == (
        EventType.ENQUEUED,
        None,
        JobState.QUEUED,
        1,
    )
    assert event.data == {"payload": "hello", "max_retries": 5}
    assert event.attempt is None


def test_failed_attempt_with_retries_left_schedules_a_retry() -> None:
    s = Script(max_retries=1)
    s.do(job.start)
    event = s.fail(r=0.5)
    assert (event.type, event.from_state, event.to_state) == ("retry_scheduled", "running", "queued")
    assert event.data == {
        "error": "boom",
        "reason": "error",
        "duration_ms": 3,
        "delay_ms": 50,
        "next_attempt_at": "2025-11-29T02:01:19.070Z",
    }
    assert s.view.next_attempt_at_ms == event.at_ms + 50
    assert s.view.last_error == "boom"


def test_success_chain() -> None:
    s = Script()
    s.do(job.start)
    s.do(job.succeed, duration_ms=7)
    assert s.types() == ["enqueued", "started", "succeeded"]
    assert (s.view.state, s.view.attempts, s.view.last_error) == (JobState.DONE, 1, None)


def test_retries_then_success_chain_numbers_attempts() -> None:
    s = Script(max_retries=2)
    s.do(job.start)
    s.fail()
    s.do(job.start)
    s.fail()
    s.do(job.start)
    s.do(job.succeed, duration_ms=1)
    assert s.types() == [
        "enqueued",
        "started",
        "retry_scheduled",
        "started",
        "retry_scheduled",
        "started",
        "succeeded",
    ]
    assert [e.attempt for e in s.events] == [None, 1, 1, 2, 2, 3, 3]
    assert s.view.state is JobState.DONE and s.view.last_error == "boom"


def test_a_job_gets_at_most_one_plus_max_retries_attempts() -> None:
    s = Script(max_retries=2)
    for _ in range(2):
        s.do(job.start)
        assert s.fail().type is EventType.RETRY_SCHEDULED
    s.do(job.start)
    last = s.fail()
    assert (last.type, last.to_state, last.attempt) == (EventType.FAILED, JobState.FAILED, 3)
    assert last.data == {"error": "boom", "reason": "error", "duration_ms": 3}
    assert s.view.state is JobState.FAILED and s.view.next_attempt_at_ms is None


def test_requeue_gives_a_failed_job_a_fresh_budget() -> None:
    s = Script(max_retries=1)
    for _ in range(2):
        s.do(job.start)
        s.fail()
    assert s.view.state is JobState.FAILED
    requeued = s.do(job.requeue)
    assert (requeued.type, requeued.from_state, requeued.to_state, requeued.attempt) == (
        EventType.REQUEUED,
        JobState.FAILED,
        JobState.QUEUED,
        None,
    )
    s.do(job.start)
    assert s.fail().type is EventType.RETRY_SCHEDULED  # budget of 1 + max_retries again
    s.do(job.start)
    assert s.fail().type is EventType.FAILED
    assert s.view.attempts == 4


def test_an_interrupted_attempt_does_not_use_up_the_budget() -> None:
    s = Script(max_retries=0)
    s.do(job.start)
    event = s.do(job.interrupt, reason="shutdown", duration_ms=12)
    assert (event.type, event.from_state, event.to_state, event.attempt) == (
        EventType.INTERRUPTED,
        JobState.RUNNING,
        JobState.QUEUED,
        1,
    )
    assert event.data == {"reason": "shutdown", "duration_ms": 12}
    s.do(job.start)
    assert s.view.attempts == 2 and s.view.attempts_left == 0
    assert s.fail().type is EventType.FAILED


def test_started_says_how_long_the_job_was_ready_not_counting_the_retry_delay() -> None:
    s = Script(max_retries=1)
    assert s.do(job.start).data == {"waited_ms": 10}  # ready since its enqueue, 10 ms before
    retry = s.fail(r=0.5)  # due 50 ms after the failure
    again = job.start(s.view, at_ms=retry.at_ms + 80)
    assert again.data == {"waited_ms": 30}
    early = job.start(s.view, at_ms=retry.at_ms + 20)  # a clock behind the due time
    assert early.data == {"waited_ms": 0}


def test_long_errors_are_truncated() -> None:
    s = Script()
    s.do(job.start)
    event = s.do(job.fail, error="x" * 5000, duration_ms=1, policy=POLICY, rng=Fixed(0))
    assert len(event.data["error"]) == job.MAX_ERROR_CHARS


COMMANDS: dict[str, Callable[[JobView], Event]] = {
    "start": lambda v: job.start(v, at_ms=T0),
    "succeed": lambda v: job.succeed(v, at_ms=T0, duration_ms=1),
    "fail": lambda v: job.fail(v, error="e", at_ms=T0, duration_ms=1, policy=POLICY, rng=Fixed(0)),
    "requeue": lambda v: job.requeue(v, at_ms=T0),
    "interrupt": lambda v: job.interrupt(v, at_ms=T0, reason="shutdown"),
}
ALLOWED_FROM = {
    "start": {JobState.QUEUED},
    "succeed": {JobState.RUNNING},
    "fail": {JobState.RUNNING},
    "requeue": {JobState.FAILED},
    "interrupt": {JobState.RUNNING},
}


def view_in(state: JobState) -> JobView:
    s = Script()
    if state is JobState.QUEUED:
        return s.view
    s.do(job.start)
    if state is JobState.DONE:
        s.do(job.succeed, duration_ms=1)
    elif state is JobState.FAILED:
        s.fail()
    return s.view


@pytest.mark.parametrize(("name", "state"), list(itertools.product(COMMANDS, JobState)))
def test_commands_are_refused_exactly_where_the_machine_refuses(name: str, state: JobState) -> None:
    view = view_in(state)
    if state in ALLOWED_FROM[name]:
        event = COMMANDS[name](view)
        assert event.from_state is state and event.version == view.version + 1
    else:
        with pytest.raises(InvalidTransition) as info:
            COMMANDS[name](view)
        assert info.value.state == state.value


def test_replaying_the_log_rebuilds_the_live_views() -> None:
    rng = random.Random(7)
    scripts = [Script(job_id=f"j{i}", max_retries=i % 3) for i in range(30)]
    for _ in range(12):
        for s in scripts:
            state = s.view.state
            if state is JobState.QUEUED:
                s.do(job.start)
            elif state is JobState.RUNNING:
                choice = rng.random()
                if choice < 0.5:
                    s.do(job.succeed, duration_ms=1)
                elif choice < 0.9:
                    s.fail(r=rng.random())
                else:
                    s.do(job.interrupt, reason="shutdown")
            elif state is JobState.FAILED:
                s.do(job.requeue)
    log = sorted((e for s in scripts for e in s.events), key=lambda e: (e.at_ms, e.job_id))
    assert project(log) == {s.view.id: s.view for s in scripts}


def test_apply_refuses_an_event_out_of_order() -> None:
    s = Script()
    started = job.start(s.view, at_ms=T0)
    with pytest.raises(ProjectionError):
        apply(None, started)
    view = apply(s.view, started)
    with pytest.raises(ProjectionError):
        apply(view, started)  # same version twice


def test_event_json_has_specs_shape() -> None:
    s = Script()
    event = s.do(job.start)
    assert event.to_dict() == {
        "seq": 2,
        "type": "started",
        "job_id": "a",
        "at": "2025-11-29T02:01:19.010Z",
        "from": "queued",
        "to": "running",
        "attempt": 1,
        "data": {"waited_ms": 10},
    }
