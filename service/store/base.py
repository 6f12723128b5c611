"""The seam between kasp and its storage: what every store guarantees.

A store keeps the event log and the projection of it, and changes both in one
step: an event is appended and applied together, or neither happens. Stores
assign `seq` in commit order. Writers name the job version they decided from
(`Event.version`); a store refuses an event whose version is not the job's
next one, so two writers cannot both record the same move. The rules behind
these promises are written once, in service/store/core.py, and
tests/store/ checks every one of them on every store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from domain.events import Event
from domain.projection import JobView
from domain.states import EventType, JobState
from service.store.faults import StoreHealth

EventListener = Callable[[Event], None]
#: Called with (event type, due time in ms or None, job id) when ANOTHER instance
#: committed an event; `due_ms` is when a `retry_scheduled` retry, or an `enqueued` job
#: with a run_at, becomes ready. The job id lets a pool cancel the attempt it runs and a
#: long-poll (?wait=) re-read its job.
RemoteListener = Callable[[EventType, "int | None", str], None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    jobs: dict[JobState, int] = field(default_factory=dict)  #: retained jobs by state
    ready: int = 0  #: queued and due: admitted, not yet started
    delayed: int = 0  #: queued, waiting out a retry delay
    event_count: int = 0  #: retained events
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobView]
    next_cursor: int | None  #: pass back as `cursor`; None when the listing is complete


class EventStore(Protocol):
    #: None when the store wakes the pool itself through listeners on every
    #: event that makes work ready; otherwise how often idle workers poll.
    poll_interval_s: float | None
    #: True when concurrent writes share one commit (the SQL stores' group commit):
    #: a claim sent together with an outcome then costs no commit of its own.
    batches_commits: bool
    #: Whether the store can be reached and written now (faults.py); drivers raise
    #: StoreUnavailable while it cannot.
    health: StoreHealth

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(event)` after each committed event, in seq order.

        A listener that raises is logged; the commit stands and every caller gets its answer."""

    def certainly_full(self, job_id: str, capacity: int) -> bool:
        """True only if `enqueue` of a new `job_id` would now certainly raise QueueFull:
        a short-cut the engine takes before building the event. False when unsure
        (the SQL stores always say False: their decision stays in the commit)."""

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        """Record an `enqueued` event unless the id is known.

        Returns (view, True) when created, or (the existing view, False). Raises
        `QueueFull` when `capacity` jobs are ready and not yet started; a known
        id is answered before capacity is checked, so a re-send never gets 429.
        Whether a re-send is the same request is `core.same_request`'s to say.
        """

    async def enqueue_many(
        self, events: Sequence[Event], *, capacity: int
    ) -> list[tuple[JobView, bool] | BaseException]:
        """Judge each `enqueued` as if sent alone, in order, and commit the accepted ones together.

        One outcome per event: (view, True) created, (existing view, False) a
        known id (also an id earlier in this same call), or the `QueueFull` it
        would have raised alone.
        """

    async def append(self, event: Event) -> JobView:
        """Record one event of a known job. Raises `UnknownJob`, or `VersionConflict`
        when the job has moved since the caller read it."""

    async def claim_ready(self, *, at_ms: int, limit: int = 1) -> list[JobView]:
        """Take up to `limit` ready jobs in claim order, record their `started` events in one
        commit, and return the running views (empty when nothing is ready).

        Claim order: priority DESC, then when the job became ready, then enqueue
        order. Jobs whose delay has passed by `at_ms` count as ready. Each ready
        job is handed to exactly one caller.
        """

    async def next_due_ms(self) -> int | None:
        """When the earliest delayed retry becomes ready, if any is waiting."""

    async def get_job(self, job_id: str) -> JobView | None: ...

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        """Jobs in enqueue order after `cursor` (0 = from the start).

        A page may hold fewer than `limit` jobs while `next_cursor` is not None:
        stores bound the work one page may do.
        """

    async def job_events(self, job_id: str) -> list[Event] | None:
        """That job's events in order; None if the job is unknown."""

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        """Events with seq > `after`, in seq order, never skipping one a later read would return."""

    async def stats(self) -> StoreStats: ...

    async def unfinished_job_ids(self) -> list[str]:
        """Ids of jobs still queued or running, in enqueue order."""


@runtime_checkable
class SharedStore(EventStore, Protocol):
    """A store that several kasp instances (processes or hosts) use at once.

    `claim_ready` gives the running attempt a lease owned by this instance
    (`instance_id`) for `lease_s` seconds. The instance must call `renew_leases`
    for its running attempts well within that time; any instance's
    `recover_expired` records `interrupted` (reason "lease_expired") for attempts
    whose lease ran out, so their jobs run again (at-least-once). An outcome
    appended after that is refused with `VersionConflict`.

    Events committed by other instances do not reach `add_listener` listeners
    (they only see this instance's events); `add_remote_listener` listeners are
    told that something happened elsewhere, so idle workers and event-stream
    readers re-read (through `claim_ready` / `read_events`). Remote wake-ups are
    best effort: `poll_interval_s` is set, and readers poll at that pace too.
    """

    instance_id: str
    lease_s: float

    def add_remote_listener(self, listener: RemoteListener) -> None: ...

    async def renew_leases(self, job_ids: Collection[str]) -> int:
        """Extend this instance's leases on these running jobs; returns how many it still holds."""

    async def recover_expired(self) -> int:
        """Record `interrupted` for attempts whose lease expired; returns how many."""
