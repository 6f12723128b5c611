"""Commands: each decides one move of a job and returns the event that records it.

A command asks the state machine first and raises `InvalidTransition` before
anything exists to be written, so a refused move leaves no trace in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.backoff import Backoff, RandomSource
from domain.errors import InvalidTransition
from domain.events import NO_DATA, Event, format_ts
from domain.projection import JobView
from domain.states import INITIAL_STATE, EventType, JobState, MachineError, next_state

MAX_ERROR_CHARS = 1000  # a guess: enough for a message and a short traceback line


def enqueue(job_id: str, payload: str, max_retries: int, *, at_ms: int) -> Event:
    return Event(
        type=EventType.ENQUEUED,
        job_id=job_id,
        at_ms=at_ms,
        from_state=None,
        to_state=INITIAL_STATE,
        attempt=None,
        version=1,
        data={"payload": payload, "max_retries": max_retries},
    )


def start(job: JobView, *, at_ms: int) -> Event:
    """`waited_ms`: how long the job was ready before this start (a retry is ready once
    its delay is over), read off the view so every instance measures it the same way."""
    ready_at_ms = job.next_attempt_at_ms if job.next_attempt_at_ms is not None else job.updated_at_ms
    data = {"waited_ms": max(0, at_ms - ready_at_ms)}
    return _move(job, EventType.STARTED, at_ms, attempt=job.attempts + 1, data=data)


def succeed(job: JobView, *, at_ms: int, duration_ms: int) -> Event:
    return _move(job, EventType.SUCCEEDED, at_ms, data={"duration_ms": duration_ms})


def fail(
    job: JobView,
    *,
    error: str,
    at_ms: int,
    duration_ms: int,
    policy: Backoff,
    rng: RandomSource,
    reason: str = "error",
) -> Event:
    """`retry_scheduled` while the budget has attempts left, `failed` when it has none.
    `reason`: "error" (the processor raised or returned no JSON) or "timeout" (SPEC)."""
    error = error[:MAX_ERROR_CHARS]
    if job.attempts_left <= 0:
        return _move(
            job, EventType.FAILED, at_ms, data={"error": error, "reason": reason, "duration_ms": duration_ms}
        )
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
    return _move(job, EventType.REQUEUED, at_ms, attempt=None)


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
