"""Job control in the domain: schedules, priorities, timeouts, failure reasons, cancel, results.

Every event's `data` keys are checked exactly: the store-core branch persists them and the
event catalogue documents them (JOBFIELDS.md, SPEC Events).
"""

from __future__ import annotations

import pytest

from domain import job
from domain.errors import InvalidResult, InvalidTransition
from domain.events import format_ts
from domain.projection import apply
from domain.states import FINISHED_STATES, EventType, JobState
from tests.domain.script import POLICY, T0, Fixed, Script, view_in

HOUR_MS = 3_600_000


def test_enqueue_records_priority_timeout_and_when_a_schedule_makes_the_job_due() -> None:
    event = job.enqueue("s", "p", 2, at_ms=T0, priority=-7, timeout_ms=250, run_at_ms=T0 + HOUR_MS)
    assert event.data == {
        "payload": "p",
        "max_retries": 2,
        "priority": -7,
        "timeout_ms": 250,
        "run_at": "2025-11-29T03:01:19.000Z",
    }
    view = apply(None, event)
    assert (view.state, view.priority, view.timeout_ms, view.next_attempt_at_ms) == (
        JobState.QUEUED,
        -7,
        250,
        T0 + HOUR_MS,
    )
    assert view.to_dict()["next_attempt_at"] == "2025-11-29T03:01:19.000Z"


@pytest.mark.parametrize("run_at_ms", [T0 - HOUR_MS, T0 - 1, T0])
def test_a_run_at_in_the_past_means_now(run_at_ms: int) -> None:
    event = job.enqueue("s", "p", 0, at_ms=T0, run_at_ms=run_at_ms)
    assert event.data["run_at"] == format_ts(T0)  # the job became due when it was accepted
    view = apply(None, event)
    assert view.next_attempt_at_ms is None  # ready at once
    assert job.start(view, at_ms=T0 + 5).data == {"waited_ms": 5}


def test_a_scheduled_job_has_waited_only_from_its_time_when_it_starts() -> None:
    s = Script(run_at_ms=T0 + 1000)
    early = job.start(s.view, at_ms=T0 + 10)  # a clock behind the schedule: never negative
    assert early.data == {"waited_ms": 0}
    assert job.start(s.view, at_ms=T0 + 1030).data == {"waited_ms": 30}
    s.do(job.start)
    assert s.view.next_attempt_at_ms is None  # the schedule is spent once the job runs


def test_the_view_carries_priority_timeout_and_result_in_its_json() -> None:
    s = Script(priority=5, timeout_ms=0)
    s.do(job.start)
    s.do(job.succeed, duration_ms=4, result={"answer": [42, "forty-two"]})
    assert s.view.to_dict() == {
        "id": "a",
        "payload": "payload",
        "max_retries": 0,
        "priority": 5,
        "timeout_ms": 0,
        "state": "done",
        "attempts": 1,
        "last_error": None,
        "result": {"answer": [42, "forty-two"]},
        "created_at": "2025-11-29T02:01:19.000Z",
        "updated_at": "2025-11-29T02:01:19.020Z",
        "next_attempt_at": None,
    }


def test_succeeded_carries_the_result_and_none_when_the_processor_returned_nothing() -> None:
    s = Script()
    s.do(job.start)
    assert s.do(job.succeed, duration_ms=7).data == {"duration_ms": 7, "result": None}
    assert s.view.result is None


def test_succeeded_records_a_copy_the_processor_cannot_change_afterwards() -> None:
    returned = {"items": [1, 2]}
    s = Script()
    s.do(job.start)
    event = s.do(job.succeed, duration_ms=1, result=returned)
    returned["items"].append(3)
    assert event.data["result"] == {"items": [1, 2]} and s.view.result == {"items": [1, 2]}


def test_a_result_that_is_not_json_is_refused_before_anything_is_written() -> None:
    s = Script()
    s.do(job.start)
    with pytest.raises(InvalidResult, match="not a JSON value"):
        job.succeed(s.view, at_ms=T0 + 50, duration_ms=1, result={"when": object()})
    # The pool records the failed attempt instead, with reason "error".
    event = s.fail(reason="error")
    assert (event.type, event.data["reason"]) == (EventType.FAILED, "error")


@pytest.mark.parametrize("reason", ["error", "timeout"])
def test_every_failed_attempt_says_why(reason: job.FailureReason) -> None:
    s = Script(max_retries=1)
    s.do(job.start)
    retry = s.fail(reason=reason)
    assert retry.type is EventType.RETRY_SCHEDULED
    assert set(retry.data) == {"error", "reason", "duration_ms", "delay_ms", "next_attempt_at"}
    assert retry.data["reason"] == reason
    s.do(job.start)
    failed = s.fail(reason=reason)
    assert failed.type is EventType.FAILED
    assert failed.data == {"error": "boom", "reason": reason, "duration_ms": 3}


def test_a_failure_without_a_reason_is_an_error() -> None:
    s = Script()
    s.do(job.start)
    event = job.fail(s.view, error="e", at_ms=T0, duration_ms=1, policy=POLICY, rng=Fixed(0))
    assert event.data["reason"] == "error"


def test_cancelling_a_ready_job_records_no_attempt_and_no_data() -> None:
    s = Script()
    event = s.do(job.cancel)
    assert (event.type, event.from_state, event.to_state, event.attempt) == (
        EventType.CANCELLED,
        JobState.QUEUED,
        JobState.CANCELLED,
        None,
    )
    assert event.data == {}
    assert s.view.state in FINISHED_STATES and s.view.attempts == 0


@pytest.mark.parametrize("wait", ["retry delay", "schedule"])
def test_cancelling_a_waiting_job_clears_its_next_attempt(wait: str) -> None:
    if wait == "schedule":
        s = Script(run_at_ms=T0 + HOUR_MS)
    else:
        s = Script(max_retries=1)
        s.do(job.start)
        s.fail()
    assert s.view.next_attempt_at_ms is not None
    event = s.do(job.cancel, duration_ms=99)  # a duration means nothing without a running attempt
    assert (event.attempt, event.data) == (None, {})
    assert s.view.state is JobState.CANCELLED and s.view.next_attempt_at_ms is None


def test_cancelling_a_running_job_ends_its_attempt_which_stays_counted() -> None:
    s = Script(max_retries=1)
    s.do(job.start)
    s.fail()
    s.do(job.start)
    event = s.do(job.cancel, duration_ms=1234)
    assert (event.type, event.from_state, event.to_state, event.attempt) == (
        EventType.CANCELLED,
        JobState.RUNNING,
        JobState.CANCELLED,
        2,
    )
    assert event.data == {"duration_ms": 1234}
    assert (s.view.attempts, s.view.budget_used, s.view.attempts_left) == (2, 2, 0)
    assert s.view.last_error == "boom"  # a cancel is no error: the last one stays on record


def test_a_cancel_recorded_without_a_duration_carries_no_data() -> None:
    s = Script()
    s.do(job.start)
    assert s.do(job.cancel).data == {}


@pytest.mark.parametrize("state", sorted(FINISHED_STATES))
def test_a_finished_job_cannot_be_cancelled(state: JobState) -> None:
    view = view_in(state)
    with pytest.raises(InvalidTransition) as info:
        job.cancel(view, at_ms=T0, duration_ms=1)
    assert (info.value.state, info.value.trigger) == (state.value, "cancelled")


def test_requeue_gives_a_cancelled_job_a_fresh_budget_ready_now() -> None:
    s = Script(max_retries=1)
    s.do(job.start)
    s.fail()
    s.do(job.start)
    s.do(job.cancel, duration_ms=5)
    requeued = s.do(job.requeue)
    assert (requeued.type, requeued.from_state, requeued.to_state, requeued.attempt) == (
        EventType.REQUEUED,
        JobState.CANCELLED,
        JobState.QUEUED,
        None,
    )
    assert requeued.data == {}
    assert (s.view.state, s.view.attempts_left, s.view.next_attempt_at_ms) == (JobState.QUEUED, 2, None)
    assert s.view.attempts == 2  # attempts count over the job's whole life
    s.do(job.start)
    assert s.fail().type is EventType.RETRY_SCHEDULED


def test_a_scheduled_job_cancelled_and_requeued_is_ready_now_not_at_its_old_time() -> None:
    s = Script(run_at_ms=T0 + HOUR_MS)
    s.do(job.cancel)
    s.do(job.requeue)
    assert s.view.next_attempt_at_ms is None
    assert job.start(s.view, at_ms=s.t + 3).data == {"waited_ms": 3}


def test_priority_and_timeout_survive_every_move() -> None:
    s = Script(max_retries=1, priority=100, timeout_ms=86_400_000)
    s.do(job.start)
    s.fail(reason="timeout")
    s.do(job.start)
    s.do(job.interrupt, reason="shutdown")
    s.do(job.cancel)
    s.do(job.requeue)
    s.do(job.start)
    s.do(job.succeed, duration_ms=1, result=[True])
    assert (s.view.priority, s.view.timeout_ms, s.view.result) == (100, 86_400_000, [True])
