"""The embedded default store: the whole log and its projection in this process.

Bounded under sustained load: beyond `retain_finished` finished jobs, the
oldest finished ones are evicted together with their events. Evicted events
are dropped from the global log lazily and compacted once they are the
majority, so eviction costs O(1) amortised.

Compact on purpose. Each job is kept as ONE flat tuple of plain values: its
view's fields (state as a plain str), then its events, each event a tuple of
plain str/int values with its data flattened in (a JSON object or array, a
result, as its encoded bytes). CPython's cyclic garbage
collector stops tracking a tuple that holds only such values the first time it
looks at it, so a million retained jobs cost the collector nothing. Kept as
`JobView` and `Event` objects, every full collection walked all of them: 16% of
the no-HTTP engine benchmark's CPU time, pauses up to ~120 ms (the p99 of POST
/enqueue), and ~400 more bytes a job (docs/PERFORMANCE.md). `Event` and
`JobView` objects are built on the way in and out; nothing else sees the tuples.

Flat, not nested: a collection untracks a tuple only if what it holds is
untracked already, and it looks at a tuple reached only through another tuple
AFTER that one. So each level of nesting (job -> events -> event -> data) cost
one more young collection, and the outer tuples reached the oldest generation
still tracked: a full collection every ~10,000 jobs, walking the whole heap
(8% of the engine benchmark's CPU). An event is held from the log (a
long-lived list) and made before its job's tuple, so one young collection
untracks both. And the fewer tuples a job keeps, the fewer young collections
it causes (each allocation counts towards the next one; each survivor they
promote brings a full collection nearer): one per job, not a row and a tuple
of events.
"""

from __future__ import annotations

import heapq
import json
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from domain.errors import QueueFull
from domain.events import NO_DATA, Event
from domain.job import start
from domain.projection import JobView, apply
from domain.states import FINISHED_STATES, EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, StoreStats
from service.store.core import Listeners, admit, next_of, refused
from service.store.faults import StoreHealth

LIST_SCAN_LIMIT = 10_000  # log entries one /jobs page may examine: bounds a page to ~ms
COMPACT_MIN_DEAD = 1_024  # below this, a compaction would cost more than the waste

# Python 3.11 resolves an enum member named on its class (`JobState.QUEUED`) through a
# descriptor, ~0.2 µs a lookup; hot paths compare against these module names (Issue 12).
_QUEUED = JobState.QUEUED

# Enum member -> its plain str (one shared object per value), and back.
_PLAIN: dict[Any, str | None] = {m: m.value for m in (*EventType, *JobState)} | {None: None}
_EVENT_TYPE = {t.value: t for t in EventType}
_STATE: dict[str | None, JobState | None] = {s.value: s for s in JobState} | {None: None}

# A stored event: (seq, type, job_id, at_ms, from_state, to_state, attempt, version, *data),
# type and states as plain str, data as key, ..., key, value, ..., value: `(*data, *data.values())`
# builds it in half the time of interleaving the pairs (chain over items), ~20% of a batch's
# admission in the profile (docs/PERFORMANCE.md, Issue 12).
_Stored = tuple[Any, ...]
_SEQ, _TYPE, _JOB_ID, _DATA_AT = 0, 1, 2, 8
_seq_of = itemgetter(_SEQ)

# A stored job: JobView's fields in order (state as a plain str, a container result as
# bytes), then its events in order.
_Job = tuple[Any, ...]
_ID, _STATE_AT, _CREATED_SEQ, _RESULT_AT, _EVENTS_AT = 0, 3, 11, 14, 15

# A result that is a JSON object or array is kept as its compact UTF-8 JSON: a dict or list
# is tracked by the collector, and so would be every tuple holding it, forever. A result is
# never bytes itself (it is a JSON value, domain/results.py), so bytes mean "decode me".
_RESULT = "result"  # the one data key whose value may be an object or array (`succeeded`)
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _plain(value: Any) -> Any:
    return _encode_json(value).encode() if isinstance(value, (dict, list)) else value


def _unplain(value: Any) -> Any:
    return json.loads(value) if isinstance(value, bytes) else value


def _stored(event: Event) -> _Stored:
    data = event.data
    values = data.values()
    if isinstance(data.get(_RESULT), (dict, list)):  # `succeeded` with an object or array
        values = map(_plain, values)  # type: ignore[assignment]
    return (
        event.seq,
        _PLAIN[event.type],
        event.job_id,
        event.at_ms,
        _PLAIN[event.from_state],
        _PLAIN[event.to_state],
        event.attempt,
        event.version,
        *data,
        *values,
    )


def _event(stored: _Stored) -> Event:
    seq, type_, job_id, at_ms, from_state, to_state, attempt, version = stored[:_DATA_AT]
    data = stored[_DATA_AT:]
    if _RESULT in data:
        data = tuple(map(_unplain, data))
    return Event(
        type=_EVENT_TYPE[type_],
        job_id=job_id,
        at_ms=at_ms,
        from_state=_STATE[from_state],
        to_state=_STATE[to_state],  # type: ignore[arg-type]  # never None for a stored event
        attempt=attempt,
        version=version,
        data=dict(zip(data[: len(data) // 2], data[len(data) // 2 :], strict=True)) if data else NO_DATA,
        seq=seq,
    )


def _job(view: JobView, events: tuple[_Stored, ...], stored: _Stored) -> _Job:
    """The job as kept after its event `stored`: `view`, then `events` and `stored`."""
    return (
        view.id,
        view.payload,
        view.max_retries,
        _PLAIN[view.state],
        view.attempts,
        view.budget_used,
        view.last_error,
        view.created_at_ms,
        view.updated_at_ms,
        view.next_attempt_at_ms,
        view.version,
        view.created_seq,
        view.priority,
        view.timeout_ms,
        view.result if view.result is None else _plain(view.result),
        *events,
        stored,
    )


def _view(row: _Job) -> JobView:
    # Positional: the job's tuple starts with JobView's fields in order (see _job), and this
    # runs twice per job on the hot path; only the state needs turning back into an enum.
    # An object or array result is decoded (a done job, read by GET: off the hot path).
    result = row[_RESULT_AT]
    return JobView(  # type: ignore[call-arg]
        *row[:_STATE_AT],
        _STATE[row[_STATE_AT]],
        *row[_STATE_AT + 1 : _RESULT_AT],
        json.loads(result) if type(result) is bytes else result,
    )


class MemoryStore:
    """The core's rules (service/store/core.py) over in-process indexes; every call commits at once."""

    poll_interval_s: float | None = None
    batches_commits = False  #: each write commits on its own, immediately

    def __init__(self, *, retain_finished: int) -> None:
        self._retain_finished = retain_finished
        self.health = StoreHealth("memory")  # never goes down: nothing here can be unreachable
        self._jobs: dict[str, _Job] = {}
        self._log: list[_Stored] = []  # seq order; may hold events of evicted jobs
        self._dead = 0  # events of evicted jobs still in _log
        self._last_seq = 0
        # The ready queue: one FIFO of (job id, version) per priority, highest priority first.
        # An entry is valid while `_ready_version` maps its id to its version; a job that
        # moves (claimed, cancelled) drops its entry from that map and its stale tuple is
        # skipped when reached, so a move never searches a queue.
        self._queues: dict[int, deque[tuple[str, int]]] = {}
        self._priorities: list[int] = []  # priorities with a queue, ascending
        self._ready_version: dict[str, int] = {}  # ready jobs: len() is the queue's depth
        # Delayed jobs (a retry delay, a schedule): a heap of (due_ms, seq, id, version,
        # priority), valid while `_delayed_version` maps id to version, as above.
        self._delayed: list[tuple[int, int, str, int, int]] = []
        self._delayed_version: dict[str, int] = {}
        self._finished: deque[_Job] = deque()  # jobs as they were when they finished, in finish order
        # Jobs by state: a JobState and its str hash alike. A dict with every state, not a
        # Counter: `counter[key] += 1` took ~0.9 µs against a dict's ~0.1 (Issue 12).
        self._counts: dict[str, int] = dict.fromkeys(JobState, 0)
        self._n_finished = 0  # retained jobs in a finished state
        self._listeners = Listeners()
        self._deliver = self._listeners.deliver

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.add(listener)

    # -- writing -----------------------------------------------------------

    def certainly_full(self, job_id: str, capacity: int) -> bool:
        # Exact, not a guess: `_enqueue` asks `admit` the same rule with at least as many
        # ready jobs (promoting due ones only adds), and nothing runs in between.
        return refused(job_id in self._jobs, len(self._ready_version), capacity)

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        return self._enqueue(event, capacity)

    async def enqueue_many(
        self, events: Sequence[Event], *, capacity: int
    ) -> list[tuple[JobView, bool] | BaseException]:
        outcomes: list[tuple[JobView, bool] | BaseException] = []
        enqueue = self._enqueue
        for event in events:  # each as if sent alone, in order: one commit each, with no I/O
            try:
                # Not `await self.enqueue`: a coroutine per job was ~5% of a batch (Issue 12).
                outcomes.append(enqueue(event, capacity))
            except QueueFull as full:
                outcomes.append(full)
        return outcomes

    def _enqueue(self, event: Event, capacity: int) -> tuple[JobView, bool]:
        row = self._jobs.get(event.job_id)
        self._promote_due(event.at_ms)
        if admit(_view(row) if row is not None else None, len(self._ready_version), capacity):
            return self._commit(None, (), event), True
        assert row is not None
        return _view(row), False

    async def append(self, event: Event) -> JobView:
        row = self._jobs.get(event.job_id)
        view = next_of(_view(row) if row is not None else None, event)
        assert row is not None
        return self._commit(view, row[_EVENTS_AT:], event)

    async def claim_ready(self, *, at_ms: int, limit: int = 1) -> list[JobView]:
        self._promote_due(at_ms)
        claimed: list[JobView] = []
        while len(claimed) < limit and (job_id := self._pop_ready()) is not None:
            row = self._jobs[job_id]
            view = _view(row)
            claimed.append(self._commit(view, row[_EVENTS_AT:], start(view, at_ms=at_ms)))
        return claimed

    def _pop_ready(self) -> str | None:
        """The next job in claim order (priority DESC, then the order jobs became ready)."""
        ready_version = self._ready_version
        for priority in reversed(self._priorities):
            queue = self._queues[priority]
            while queue:
                job_id, version = queue.popleft()
                if ready_version.get(job_id) == version:
                    return job_id  # its `started` takes it out of ready_version
        return None

    def _push_ready(self, job_id: str, version: int, priority: int) -> None:
        queue = self._queues.get(priority)
        if queue is None:
            queue = self._queues[priority] = deque()
            insort(self._priorities, priority)
        queue.append((job_id, version))
        self._ready_version[job_id] = version

    def _commit(self, view: JobView | None, events: tuple[_Stored, ...], event: Event) -> JobView:
        """Assign the next seq, apply, index: the one place the log and projection change.
        `view` and `events`: the job as it is (None and () for a new one)."""
        event = event.with_seq(self._last_seq + 1)
        new_view = apply(view, event)  # raises before any change
        stored = _stored(event)  # before the job's tuple, which holds it (module docstring)
        row = _job(new_view, events, stored)
        self._last_seq = event.seq
        self._log.append(stored)
        self._jobs[new_view.id] = row
        if view is not None:
            self._ready_version.pop(view.id, None)  # it moved: any queue entry of it is stale
            self._delayed_version.pop(view.id, None)
            self._counts[view.state] -= 1
            if view.state in FINISHED_STATES:
                self._n_finished -= 1  # requeued
        self._counts[new_view.state] += 1
        if new_view.state is _QUEUED:
            due = new_view.next_attempt_at_ms
            if due is None:
                self._promote_due(event.at_ms)  # what became ready before this job goes first
                self._push_ready(new_view.id, new_view.version, new_view.priority)
            else:
                entry = (due, event.seq, new_view.id, new_view.version, new_view.priority)
                heapq.heappush(self._delayed, entry)
                self._delayed_version[new_view.id] = new_view.version
        elif new_view.state in FINISHED_STATES:
            self._n_finished += 1
            self._finished.append(row)
            if self._n_finished > self._retain_finished:  # a call per finished job cost ~2% (Issue 9)
                self._evict_beyond_retention()
        self._deliver(event)
        return new_view

    def _promote_due(self, now_ms: int) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now_ms:
            _, _, job_id, version, priority = heapq.heappop(delayed)
            if self._delayed_version.get(job_id) == version:
                del self._delayed_version[job_id]
                self._push_ready(job_id, version, priority)

    def _evict_beyond_retention(self) -> None:
        while self._n_finished > self._retain_finished:
            finished = self._finished.popleft()
            job_id = finished[_ID]
            if self._jobs.get(job_id) is not finished:
                continue  # requeued (or already gone) since it finished: not this entry's job
            del self._jobs[job_id]
            self._counts[finished[_STATE_AT]] -= 1
            self._n_finished -= 1
            self._dead += len(finished) - _EVENTS_AT
        if self._dead >= COMPACT_MIN_DEAD and self._dead * 2 > len(self._log):
            self._log = [e for e in self._log if self._is_live(e)]
            self._dead = 0

    def _is_live(self, stored: _Stored) -> bool:
        row = self._jobs.get(stored[_JOB_ID])
        # A re-enqueued id is a new job: events older than its `enqueued` belong to the evicted one.
        return row is not None and stored[_SEQ] >= row[_CREATED_SEQ]

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        return self._delayed[0][0] if self._delayed else None

    async def get_job(self, job_id: str) -> JobView | None:
        row = self._jobs.get(job_id)
        return _view(row) if row is not None else None

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        jobs: list[JobView] = []
        log = self._log
        start_at = bisect_right(log, cursor, key=_seq_of)
        end_at = min(len(log), start_at + LIST_SCAN_LIMIT)
        for i in range(start_at, end_at):
            stored = log[i]
            if stored[_TYPE] != EventType.ENQUEUED or not self._is_live(stored):
                continue
            row = self._jobs[stored[_JOB_ID]]
            if state is None or row[_STATE_AT] == state:
                jobs.append(_view(row))
                if len(jobs) == limit:
                    return JobPage(jobs, row[_CREATED_SEQ])
        if end_at < len(log):
            return JobPage(jobs, log[end_at - 1][_SEQ])
        return JobPage(jobs, None)

    async def job_events(self, job_id: str) -> list[Event] | None:
        row = self._jobs.get(job_id)
        return [_event(stored) for stored in row[_EVENTS_AT:]] if row is not None else None

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        source: tuple[_Stored, ...] | list[_Stored]
        if job_id is not None:
            row = self._jobs.get(job_id)
            source = row[_EVENTS_AT:] if row is not None else ()
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
        self._promote_due(now_ms())  # judged at the clock's now, as the SQL stores judge it
        return StoreStats(
            jobs={s: self._counts[s] for s in JobState},
            ready=len(self._ready_version),
            delayed=len(self._delayed_version),
            event_count=len(self._log) - self._dead,
            last_seq=self._last_seq,
        )

    async def unfinished_job_ids(self) -> list[str]:
        unfinished = (JobState.QUEUED, JobState.RUNNING)
        return [job_id for job_id, row in self._jobs.items() if row[_STATE_AT] in unfinished]
