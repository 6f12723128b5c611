"""Domain errors: each one says what was refused and why, so adapters can map it."""

from __future__ import annotations

from functools import cache


class KaspError(Exception):
    """Base of every error kasp's domain raises on purpose."""


class InvalidTransition(KaspError):
    """The job's state machine refuses this event from the job's current state."""

    def __init__(self, job_id: str, state: str, trigger: str) -> None:
        self.job_id = job_id
        self.state = state
        self.trigger = trigger
        super().__init__(f"job {job_id!r} is {state}: {trigger!r} is not allowed from {state}")


class UnknownJob(KaspError):
    """No job with this id is known (never enqueued, or evicted by retention)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class JobConflict(KaspError):
    """A job with this id exists with a different payload or max_retries."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} already exists with a different payload or max_retries")


class VersionConflict(KaspError):
    """Someone else appended to this job first; the caller re-reads and decides again."""

    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"job {job_id!r} is at version {actual}, the event expected {expected}")


class QueueFull(KaspError):
    """QUEUE_SIZE jobs are admitted and not yet started."""

    def __init__(self, capacity: int) -> None:
        # The message is formatted once per capacity, not on every raise: a full queue
        # raises this in floods (handler_cost.py's 429 path, with the engine's early
        # refusal: 5.7 -> 4.8 µs per request; docs/PERFORMANCE.md, Item 1).
        super().__init__(_queue_full_message(capacity))
        self.capacity = capacity


@cache
def _queue_full_message(capacity: int) -> str:
    return f"the queue holds {capacity} jobs not yet started (QUEUE_SIZE)"


class InvalidResult(KaspError):
    """A processor returned something kasp cannot record as a job's result (SPEC, Faults)."""
