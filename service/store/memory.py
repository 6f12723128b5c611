"""The embedded default store: the whole log and its projection in this process.

Bounded under sustained load: beyond `retain_finished` finished jobs, the
oldest finished ones are evicted together with their events. Evicted events
are dropped from the global log lazily and compacted once they are the
majority, so eviction costs O(1) amortised.

Events are kept in a compact form (`_Stored`): a tuple of plain str/int
values, the event's data flattened into it. CPython's cyclic garbage
collector stops tracking a tuple that holds only such values after its first
pass, so retained events cost the collector nothing; kept as `Event` objects,
every full collection walked all of them (16% of the no-HTTP engine
benchmark's CPU time, with pauses over 100 ms at 100,000 retained jobs), and
they took ~200 more bytes a job. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import asyncio
import heapq
from bisect import bisect_right
from collections import Counter, deque
from itertools import chain
from operator import itemgetter
from typing import Any

from domain.errors import QueueFull, UnknownJob, VersionConflict
from domain.events import NO_DATA, Event
from domain.job import start
from domain.projection import JobView, apply
from domain.states import FINISHED_STATES, EventType, JobState
from service.store.base import EventListener, JobPage, StoreStats

LIST_SCAN_LIMIT = 10_000  # log entries one /jobs page may examine: bounds a page to ~ms
COMPACT_MIN_DEAD = 1_024  # below this, a compaction would cost more than the waste

# _Stored: (seq, type, job_id, at_ms, from_state, to_state, attempt, version, data)
# with type and states as plain str and data as (key, value, key, value, ...).
_Stored = tuple[Any, ...]
_SEQ, _TYPE, _JOB_ID = 0, 1, 2
_seq_of = itemgetter(_SEQ)
# Enum member -> its plain str (one shared object per value), and back.
_PLAIN: dict[Any, str | None] = {m: m.value for m in (*EventType, *JobState)} | {None: None}
_EVENT_TYPE = {t.value: t for t in EventType}
_STATE: dict[str | None, JobState | None] = {s.value: s for s in JobState} | {None: None}


def _stored(event: Event) -> _Stored:
    data = tuple(chain.from_iterable(event.data.items())) if event.data else ()
    return (
        event.seq,
        _PLAIN[event.type],
        event.job_id,
        event.at_ms,
        _PLAIN[event.from_state],
        _PLAIN[event.to_state],
        event.attempt,
        event.version,
        data,
    )


def _event(stored: _Stored) -> Event:
    seq, type_, job_id, at_ms, from_state, to_state, attempt, version, data = stored
    return Event(
        type=_EVENT_TYPE[type_],
        job_id=job_id,
        at_ms=at_ms,
        from_state=_STATE[from_state],
        to_state=_STATE[to_state],  # type: ignore[arg-type]  # never None for a stored event
        attempt=attempt,
        version=version,
        data=dict(zip(data[::2], data[1::2], strict=True)) if data else NO_DATA,
        seq=seq,
    )


class _Record:
    """A retained job: its current view and its own events (shared with the global log)."""

    __slots__ = ("events", "view")

    def __init__(self, view: JobView, stored: _Stored) -> None:
        self.view = view
        self.events: tuple[_Stored, ...] = (stored,)  # a tuple, so the collector can untrack it too


class MemoryStore:
    poll_interval_s: float | None = None

    def __init__(self, *, retain_finished: int) -> None:
        self._retain_finished = retain_finished
        self._jobs: dict[str, _Record] = {}
        self._log: list[_Stored] = []  # seq order; may hold events of evicted jobs
        self._dead = 0  # events of evicted jobs still in _log
        self._last_seq = 0
        self._ready: deque[str] = deque()  # FIFO of queued, due job ids
        self._delayed: list[tuple[int, int, str]] = []  # heap of (due_ms, seq, job id)
        self._finished: deque[JobView] = deque()  # views of jobs as they finished, in finish order
        self._counts: Counter[JobState] = Counter()
        self._listeners: list[EventListener] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    # -- writing -----------------------------------------------------------

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        record = self._jobs.get(event.job_id)
        if record is not None:
            return record.view, False
        self._promote_due(event.at_ms)
        if len(self._ready) >= capacity:
            raise QueueFull(capacity)
        return self._commit(None, event), True

    def append(self, event: Event) -> asyncio.Future[JobView]:
        """EventStore.append, as an already-completed future rather than a coroutine.

        The pool shields every append, so that a shutdown cannot cut a durable
        store's write in half; `asyncio.shield` wraps a coroutine in a new Task
        (one more loop turn per job: ~25% of the no-HTTP engine benchmark) but
        passes a done future straight through. This store's append never waits,
        so awaiting it behaves exactly as awaiting the coroutine would.
        """
        outcome: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
        try:
            outcome.set_result(self._append(event))
        except Exception as exc:  # raised at `await`, as from a coroutine
            outcome.set_exception(exc)
        return outcome

    def _append(self, event: Event) -> JobView:
        record = self._jobs.get(event.job_id)
        if record is None:
            raise UnknownJob(event.job_id)
        if event.version != record.view.version + 1:
            raise VersionConflict(event.job_id, event.version - 1, record.view.version)
        return self._commit(record, event)

    async def claim_ready(self, *, at_ms: int) -> JobView | None:
        self._promote_due(at_ms)
        if not self._ready:
            return None
        record = self._jobs[self._ready.popleft()]
        return self._commit(record, start(record.view, at_ms=at_ms))

    def _commit(self, record: _Record | None, event: Event) -> JobView:
        """Assign the next seq, apply, index: the one place the log and projection change."""
        event = event.with_seq(self._last_seq + 1)
        view = apply(record.view if record is not None else None, event)  # raises before any change
        stored = _stored(event)
        self._last_seq = event.seq
        self._log.append(stored)
        if record is None:
            self._jobs[view.id] = _Record(view, stored)
        else:
            self._counts[record.view.state] -= 1
            record.view = view
            record.events += (stored,)
        self._counts[view.state] += 1
        if view.state is JobState.QUEUED:
            if view.next_attempt_at_ms is None:
                self._ready.append(view.id)
            else:
                heapq.heappush(self._delayed, (view.next_attempt_at_ms, event.seq, view.id))
        elif view.state in FINISHED_STATES:
            self._finished.append(view)
            self._evict_beyond_retention()
        for listener in self._listeners:
            listener(event)
        return view

    def _promote_due(self, now_ms: int) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now_ms:
            self._ready.append(heapq.heappop(delayed)[2])

    def _evict_beyond_retention(self) -> None:
        while self._counts[JobState.DONE] + self._counts[JobState.FAILED] > self._retain_finished:
            finished = self._finished.popleft()
            record = self._jobs.get(finished.id)
            if record is None or record.view is not finished:
                continue  # requeued (or already gone) since it finished: not this entry's job
            del self._jobs[finished.id]
            self._counts[record.view.state] -= 1
            self._dead += len(record.events)
        if self._dead >= COMPACT_MIN_DEAD and self._dead * 2 > len(self._log):
            self._log = [e for e in self._log if self._is_live(e)]
            self._dead = 0

    def _is_live(self, stored: _Stored) -> bool:
        record = self._jobs.get(stored[_JOB_ID])
        # A re-enqueued id is a new job: events older than its `enqueued` belong to the evicted one.
        return record is not None and stored[_SEQ] >= record.view.created_seq

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        return self._delayed[0][0] if self._delayed else None

    async def get_job(self, job_id: str) -> JobView | None:
        record = self._jobs.get(job_id)
        return record.view if record is not None else None

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        jobs: list[JobView] = []
        log = self._log
        start_at = bisect_right(log, cursor, key=_seq_of)
        end_at = min(len(log), start_at + LIST_SCAN_LIMIT)
        for i in range(start_at, end_at):
            stored = log[i]
            if stored[_TYPE] != EventType.ENQUEUED or not self._is_live(stored):
                continue
            view = self._jobs[stored[_JOB_ID]].view
            if state is None or view.state is state:
                jobs.append(view)
                if len(jobs) == limit:
                    return JobPage(jobs, view.created_seq)
        if end_at < len(log):
            return JobPage(jobs, log[end_at - 1][_SEQ])
        return JobPage(jobs, None)

    async def job_events(self, job_id: str) -> list[Event] | None:
        record = self._jobs.get(job_id)
        return [_event(stored) for stored in record.events] if record is not None else None

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        source: tuple[_Stored, ...] | list[_Stored]
        if job_id is not None:
            record = self._jobs.get(job_id)
            source = record.events if record is not None else ()
            live = True
        else:
            source = self._log
            live = self._dead == 0
        out: list[Event] = []
        for i in range(bisect_right(source, after, key=_seq_of), len(source)):
            stored = source[i]
            if (type is None or stored[_TYPE] == type) and (live or self._is_live(stored)):
                out.append(_event(stored))
                if len(out) == limit:
                    break
        return out

    async def stats(self) -> StoreStats:
        return StoreStats(
            jobs={s: self._counts[s] for s in JobState},
            ready=len(self._ready),
            delayed=len(self._delayed),
            event_count=len(self._log) - self._dead,
            last_seq=self._last_seq,
        )

    async def unfinished_job_ids(self) -> list[str]:
        unfinished = (JobState.QUEUED, JobState.RUNNING)
        return [job_id for job_id, r in self._jobs.items() if r.view.state in unfinished]
