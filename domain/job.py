"""Commands: each decides one move of a job and returns the event that records it.

A command asks the state machine first and raises `InvalidTransition` before
anything exists to be written, so a refused move leaves no trace in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from domain.backoff import Backoff, RandomSource
from domain.errors import InvalidTransition
from domain.events import NO_DATA, Event, format_optional_ts, format_ts
from domain.projection import JobView
from domain.results import check_result
from domain.states import INITIAL_STATE, EventType, JobState, MachineError, next_state

MAX_ERROR_CHARS = 1000  # a guess: enough for a message and a short traceback line

#: Why an attempt failed (SPEC, Jobs and their states): `timeout` when it ran over its
#: limit, `error` for anything else (an exception, a result that is not JSON).
FailureReason = Literal["error", "timeout"]


def enqueue(
    job_id: str,
    payload: str,
    max_retries: int,
    *,
    at_ms: int,
    priority: int = 0,
    timeout_ms: int | None = None,
    run_at_ms: int | None = None,
) -> Event:
    """`run_at_ms`: when a `run_at`/`delay_ms` request makes the job due (None: neither was
    given). A time at or before `at_ms` is now: `run_at` records `at_ms` and the job is
    ready at once, so the log says when the job really became due."""
    due_ms = None if run_at_ms is None else max(run_at_ms, at_ms)
    return Event(
        type=EventType.ENQUEUED,
        job_id=job_id,
        at_ms=at_ms,
        from_state=None,
        to_state=INITIAL_STATE,
        attempt=None,
        version=1,
        data={
            "payload": payload,
            "max_retries": max_retries,
            "priority": priority,
            "timeout_ms": timeout_ms,
            "run_at": format_optional_ts(due_ms),
        },
    )


def start(job: JobView, *, at_ms: int) -> Event:
    """`waited_ms`: how long the job was ready before this start (a retry is ready once
    its delay is over), read off the view so every instance measures it the same way."""
    ready_at_ms = job.next_attempt_at_ms if job.next_attempt_at_ms is not None else job.updated_at_ms
    data = {"waited_ms": max(0, at_ms - ready_at_ms)}
    return _move(job, EventType.STARTED, at_ms, attempt=job.attempts + 1, data=data)


def succeed(job: JobView, *, at_ms: int, duration_ms: int, result: Any = None) -> Event:
    """Raises `InvalidResult` (nothing written) when `result` is not a JSON value of at most
    64 KiB; the caller records a failed attempt instead. The event carries a plain-JSON copy
    of it, so a processor that later mutates what it returned changes nothing."""
    to_state = _check(job, EventType.SUCCEEDED)
    data = {"duration_ms": duration_ms, "result": check_result(result)}
    return _event(job, EventType.SUCCEEDED, to_state, at_ms, job.attempts, data)


def fail(
    job: JobView,
    *,
    error: str,
    at_ms: int,
    duration_ms: int,
    policy: Backoff,
    rng: RandomSource,
    reason: FailureReason = "error",
) -> Event:
    """`retry_scheduled` while the budget has attempts left, `failed` when it has none.
    `reason`: "error" (the processor raised or returned no JSON) or "timeout" (SPEC)."""
    error = error[:MAX_ERROR_CHARS]
    if job.attempts_left <= 0:
        data: dict[str, Any] = {"error": error, "reason": reason, "duration_ms": duration_ms}
        return _move(job, EventType.FAILED, at_ms, data=data)
    to_state = _check(job, EventType.RETRY_SCHEDULED)  # before the policy: a queued job has no retry number
    delay_ms = policy.delay_ms(job.budget_used, rng)
    data = {
        "error": error,
        "reason": reason,
        "duration_ms": duration_ms,
        "delay_ms": delay_ms,
        "next_attempt_at": format_ts(at_ms + delay_ms),
    }
    return _event(job, EventType.RETRY_SCHEDULED, to_state, at_ms, job.attempts, data)


def requeue(job: JobView, *, at_ms: int) -> Event:
    """A failed or cancelled job back to `queued`, ready now, with a fresh budget."""
    return _move(job, EventType.REQUEUED, at_ms, attempt=None)


def cancel(job: JobView, *, at_ms: int, duration_ms: int | None = None) -> Event:
    """Cancel a queued job (ready, delayed or scheduled) or a running one; a finished job
    raises `InvalidTransition`. From `running` the event ends the current attempt: it
    carries that attempt's number and, when the caller timed it, its `duration_ms`."""
    to_state = _check(job, EventType.CANCELLED)
    if job.state is JobState.RUNNING:
        data = NO_DATA if duration_ms is None else {"duration_ms": duration_ms}
        return _event(job, EventType.CANCELLED, to_state, at_ms, job.attempts, data)
    return _event(job, EventType.CANCELLED, to_state, at_ms, None, NO_DATA)


def interrupt(job: JobView, *, at_ms: int, reason: str, duration_ms: int | None = None) -> Event:
    data: dict[str, Any] = {"reason": reason}
    if duration_ms is not None:
        data["duration_ms"] = duration_ms
    return _move(job, EventType.INTERRUPTED, at_ms, data=data)


_CURRENT_ATTEMPT = -1


def _move(
    job: JobView,
    trigger: EventType,
    at_ms: int,
    *,
    attempt: int | None = _CURRENT_ATTEMPT,
    data: Mapping[str, Any] | None = None,
) -> Event:
    to_state = _check(job, trigger)
    number = job.attempts if attempt == _CURRENT_ATTEMPT else attempt
    return _event(job, trigger, to_state, at_ms, number, data)


def _check(job: JobView, trigger: EventType) -> JobState:
    try:
        return next_state(job.state, trigger)
    except MachineError:
        raise InvalidTransition(job.id, job.state.value, trigger.value) from None


def _event(
    job: JobView,
    trigger: EventType,
    to_state: JobState,
    at_ms: int,
    attempt: int | None,
    data: Mapping[str, Any] | None,
) -> Event:
    return Event(
        type=trigger,
        job_id=job.id,
        at_ms=at_ms,
        from_state=job.state,
        to_state=to_state,
        attempt=attempt,
        version=job.version + 1,
        data=data if data is not None else NO_DATA,
    )
