"""The commands users send: validated input in, one event recorded, the new view out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain import job
from domain.errors import JobConflict, KaspError, UnknownJob, VersionConflict
from domain.projection import JobView
from service.store.base import EventStore
from service.store.core import same_request

MAX_VERSION_RETRIES = 5  # a guess: a job changes a few times a second at most


class Draining(Exception):
    """The service is shutting down and accepts no new work."""


class Engine:
    def __init__(self, store: EventStore, *, capacity: int, clock: Callable[[], int]) -> None:
        self._store = store
        self._capacity = capacity
        self._clock = clock
        self.accepting = True

    async def enqueue(self, job_id: str, payload: str, max_retries: int) -> tuple[JobView, bool]:
        """(view, True) for a new job; (view, False) for an identical re-send; raises JobConflict."""
        if not self.accepting:
            raise Draining()
        event = job.enqueue(job_id, payload, max_retries, at_ms=self._clock())
        view, created = await self._store.enqueue(event, capacity=self._capacity)
        if not created and not same_request(view, event):
            raise JobConflict(job_id)
        return view, created

    async def enqueue_many(
        self, jobs: Sequence[tuple[str, str, int]]
    ) -> list[tuple[JobView, bool] | KaspError]:
        """Each job judged exactly as `enqueue` judges one sent alone, in order (an id seen
        earlier in `jobs` is a re-send of it), the accepted ones written in one commit. Per
        job: (view, created), or the error `enqueue` would have raised (QueueFull, JobConflict)."""
        if not self.accepting:
            raise Draining()
        at_ms = self._clock()
        events = [job.enqueue(job_id, payload, retries, at_ms=at_ms) for job_id, payload, retries in jobs]
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
        """Give a failed job a fresh budget; InvalidTransition unless it is failed."""
        for attempt in range(1, MAX_VERSION_RETRIES + 1):
            view = await self._store.get_job(job_id)
            if view is None:
                raise UnknownJob(job_id)
            try:
                return await self._store.append(job.requeue(view, at_ms=self._clock()))
            except VersionConflict:
                if attempt == MAX_VERSION_RETRIES:
                    raise
                # it moved under us: decide again from its new state
        raise AssertionError("unreachable: the last try returns or raises")
