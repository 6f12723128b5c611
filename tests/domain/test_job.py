"""Commands decide a move and return its event; refused moves return nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from domain import job
from domain.errors import InvalidTransition
from domain.events import Event
from domain.projection import JobView, ProjectionError, apply
from domain.states import TRANSITIONS, EventType, JobState
from tests.domain.script import POLICY, T0, Fixed, Script, view_in


def test_enqueue_creates_a_queued_job_carrying_payload_and_max_retries() -> None:
    event = job.enqueue("task-123", "hello", 5, at_ms=T0)
    assert (event.type, event.from_state, event.to_state, event.version) == (
        EventType.ENQUEUED,
        None,
        JobState.QUEUED,
        1,
    )
    assert event.data == {
        "payload": "hello",
        "max_retries": 5,
        "priority": 0,
        "timeout_ms": None,
        "run_at": None,
    }
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
    "cancel": lambda v: job.cancel(v, at_ms=T0),
}
#: The events each command may record; where it is allowed is then read off the machine.
RECORDS: dict[str, set[EventType]] = {
    "start": {EventType.STARTED},
    "succeed": {EventType.SUCCEEDED},
    "fail": {EventType.RETRY_SCHEDULED, EventType.FAILED},
    "requeue": {EventType.REQUEUED},
    "interrupt": {EventType.INTERRUPTED},
    "cancel": {EventType.CANCELLED},
}
ALLOWED_FROM = {name: {s for t, s, _ in TRANSITIONS if t in types} for name, types in RECORDS.items()}


def test_every_move_of_the_machine_has_a_command() -> None:
    assert set().union(*RECORDS.values()) == set(EventType) - {EventType.ENQUEUED}


@pytest.mark.parametrize(("name", "state"), list(itertools.product(COMMANDS, JobState)))
def test_commands_are_refused_exactly_where_the_machine_refuses(name: str, state: JobState) -> None:
    view = view_in(state)
    if state in ALLOWED_FROM[name]:
        event = COMMANDS[name](view)
        assert event.from_state is state and event.version == view.version + 1
        assert event.type in RECORDS[name]
        assert apply(view, event).state is event.to_state
    else:
        with pytest.raises(InvalidTransition) as info:
            COMMANDS[name](view)
        assert info.value.state == state.value


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
