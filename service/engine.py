"""The commands users send: validated input in, one event recorded, the new view out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain import job
from domain.errors import JobConflict, KaspError, QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.projection import JobView
from domain.states import JobState
from domain.values import value_type
from service.store.base import EventStore
from service.store.core import same_request

MAX_VERSION_RETRIES = 5  # a guess: a job changes a few times a second at most


class Draining(Exception):
    """The service is shutting down and accepts no new work."""


@value_type
class JobRequest:
    """One job as a client asked for it: what POST /enqueue (and each item of a batch)
    parses into. `due_ms` is when a `run_at`/`delay_ms` asked it to become due, already
    resolved against the clock (None: neither was given)."""

    id: str
    payload: str
    max_retries: int = 0
    priority: int = 0
    timeout_ms: int | None = None
    due_ms: int | None = None


class Engine:
    def __init__(self, store: EventStore, *, capacity: int, clock: Callable[[], int]) -> None:
        self._store = store
        self._capacity = capacity
        self._clock = clock
        self.accepting = True

    async def enqueue(self, request: JobRequest) -> tuple[JobView, bool]:
        """(view, True) for a new job; (view, False) for an identical re-send; raises JobConflict."""
        if not self.accepting:
            raise Draining()
        if self._store.certainly_full(request.id, self._capacity):
            # Before the clock is read and the event built: a full queue answers floods of
            # these, and the store's own decision would cost a coroutine and an event more.
            raise QueueFull(self._capacity)
        event = _enqueued(request, at_ms=self._clock())
        view, created = await self._store.enqueue(event, capacity=self._capacity)
        if not created and not same_request(view, event):
            raise JobConflict(request.id)
        return view, created

    async def enqueue_many(self, jobs: Sequence[JobRequest]) -> list[tuple[JobView, bool] | KaspError]:
        """Each job judged exactly as `enqueue` judges one sent alone, in order (an id seen
        earlier in `jobs` is a re-send of it), the accepted ones written in one commit. Per
        job: (view, created), or the error `enqueue` would have raised (QueueFull, JobConflict)."""
        if not self.accepting:
            raise Draining()
        at_ms = self._clock()
        events = [_enqueued(request, at_ms=at_ms) for request in jobs]
        outcomes = await self._store.enqueue_many(events, capacity=self._capacity)
        judged: list[tuple[JobView, bool] | KaspError] = []
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, KaspError):
                judged.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # not a judgement about this job: the whole request fails
            elif not outcome[1] and not same_request(outcome[0], event):
                judged.append(JobConflict(event.job_id))
            else:
                judged.append(outcome)
        return judged

    async def requeue(self, job_id: str) -> JobView:
        """Give a failed or cancelled job a fresh budget; InvalidTransition from any other state."""
        return await self._decide(job_id, lambda view, at_ms: job.requeue(view, at_ms=at_ms))

    async def cancel(self, job_id: str) -> tuple[JobView, bool]:
        """Cancel a queued or running job: (the cancelled view, whether an attempt was running).

        Recorded at once through the store's version check, so whoever commits first
        wins: an attempt whose outcome committed before stands (the cancel is refused
        with InvalidTransition: the job is finished, or decided again if it was
        retried), and an outcome arriving after the cancel gets VersionConflict and is
        dropped. The pool running the attempt hears the `cancelled` event and cancels
        its task. InvalidTransition for a finished job."""
        was_running = False

        def decide(view: JobView, at_ms: int) -> Event:
            nonlocal was_running
            was_running = view.state is JobState.RUNNING
            # A running view's updated_at is its `started`: the attempt ran from then until now.
            duration_ms = max(0, at_ms - view.updated_at_ms) if was_running else None
            return job.cancel(view, at_ms=at_ms, duration_ms=duration_ms)

        view = await self._decide(job_id, decide)
        return view, was_running

    async def _decide(self, job_id: str, command: Callable[[JobView, int], Event]) -> JobView:
        """Read the job, decide one event from it, append it; decide again if it moved meanwhile."""
        for attempt in range(1, MAX_VERSION_RETRIES + 1):
            view = await self._store.get_job(job_id)
            if view is None:
                raise UnknownJob(job_id)
            try:
                return await self._store.append(command(view, self._clock()))
            except VersionConflict:
                if attempt == MAX_VERSION_RETRIES:
                    raise
                # it moved under us: decide again from its new state
        raise AssertionError("unreachable: the last try returns or raises")


def _enqueued(request: JobRequest, *, at_ms: int) -> Event:
    """The `enqueued` event a request asks for: one place for /enqueue and /enqueue/batch."""
    return job.enqueue(
        request.id,
        request.payload,
        request.max_retries,
        at_ms=at_ms,
        priority=request.priority,
        timeout_ms=request.timeout_ms,
        run_at_ms=request.due_ms,
    )
