"""The store core: the rules every store keeps, written once; drivers only lock, read, write, batch.

The rules (each a function or a `Batch` method below, used by every driver):

- admission (`admit`): a new id is admitted while fewer than `capacity` jobs
  are ready (queued and due; a job waiting out a delay holds no place); a
  known id is answered before capacity is checked, so a re-send never gets 429;
- identity (`same_request`): a re-sent enqueue is the same request when its
  content matches the job's (the engine answers 200), else a conflict (409);
- versions (`next_of`): an event must be its job's next one, else
  `VersionConflict`, so two writers cannot both record the same move;
- claims: ready jobs in claim order (priority DESC, ready_at, created_seq),
  each recorded `started` and handed to exactly one caller;
- recovery (`recovered`): an attempt cut off (a restart, an expired lease) is
  recorded `interrupted` and its job runs again;
- retention (`evictions`): finished jobs beyond RETAIN_FINISHED are evicted,
  oldest finished first, with their events, at most EVICT_BATCH per step;
- listeners (`Listeners`): told of every committed event in seq order; one
  that raises is logged and never breaks a commit or leaves a caller waiting;
- faults: every error of a commit goes through the store's health record
  (service/store/faults.py) in ONE place, `GroupCommit._flush`: an outage
  becomes `StoreUnavailable` for every caller of the batch, anything else is a
  bug and stays itself (logged, and its neighbours retried alone).

The SQL drivers also share the group commit (`GroupCommit`): requests queue
while the previous transaction commits, then ONE transaction reads the rows
they need (`Transaction`), decides every request from them (`decide`, into a
`Batch`), numbers the events once the log is locked, writes, and commits;
listeners and callers hear of it only after COMMIT. A request the rules
refuse is decided before anything is written and does not affect the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from domain.errors import KaspError, QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.job import interrupt, start
from domain.projection import JobView, ProjectionError, apply
from domain.states import FINISHED_STATES, EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener
from service.store.faults import StoreHealth, StoreUnavailable

log = logging.getLogger("kasp.store")

EVICT_BATCH = 100  # a guess: jobs evicted per step, a few ms of deletes, so an append never waits long
MAX_BATCH = 1000  # requests per commit: a guess that bounds one transaction to ~10 ms of work
CLOSE_WAIT_S = 30  # at close, how long queued writes get to commit (a guess)

# Python 3.11 resolves an enum member named on its class (`JobState.QUEUED`) through a
# descriptor, ~0.2 µs a lookup; hot paths compare against these module names (Issue 12).
_QUEUED, _ENQUEUED = JobState.QUEUED, EventType.ENQUEUED


# -- the rules ------------------------------------------------------------------


def ready_at_ms(view: JobView) -> int | None:
    """When a queued job may start (None unless queued): its delay's end, else when it was queued."""
    if view.state is not _QUEUED:
        return None
    return view.next_attempt_at_ms if view.next_attempt_at_ms is not None else view.updated_at_ms


def is_ready(view: JobView, at_ms: int) -> bool:
    due = ready_at_ms(view)
    return due is not None and due <= at_ms


def admit(known: JobView | None, ready: int, capacity: int) -> bool:
    """True: create the job. False: the id is known (a re-send). QueueFull: no place is free."""
    if known is not None:
        return False
    if refused(False, ready, capacity):
        raise QueueFull(capacity)
    return True


def refused(known: bool, ready: int, capacity: int) -> bool:
    """Whether `admit` raises QueueFull for a job whose id is `known` (or not) with `ready`
    jobs ready: the one statement of the rule, asked early by a store that can answer
    from its counters (MemoryStore.certainly_full) and by `admit` at commit."""
    return not known and ready >= capacity


def same_request(view: JobView, event: Event) -> bool:
    """Whether a re-sent `enqueued` asks for exactly the job that exists (200), or another (409).

    SPEC compares payload, max_retries, priority and timeout_ms (an omitted timeout equals
    only another omitted one); a schedule (run_at) is not compared: a re-send never moves it."""
    data = event.data
    same: bool = (
        view.payload == data["payload"]
        and view.max_retries == data["max_retries"]
        and view.priority == data.get("priority", 0)
        and view.timeout_ms == data.get("timeout_ms")
    )
    return same


def next_of(known: JobView | None, event: Event) -> JobView:
    """The job `event` moves, checked: it exists and `event` is its next version."""
    if known is None:
        raise UnknownJob(event.job_id)
    if event.version != known.version + 1:
        raise VersionConflict(event.job_id, event.version - 1, known.version)
    return known


def recovered(view: JobView, *, at_ms: int, reason: str) -> Event:
    """The `interrupted` of an attempt whose worker is gone (`reason`: restart, lease_expired)."""
    return interrupt(view, at_ms=at_ms, reason=reason)


def evictions(finished: int, retain: int) -> int:
    """How many of the oldest finished jobs to evict now: the excess, at most EVICT_BATCH."""
    return max(0, min(EVICT_BATCH, finished - retain))


class Listeners:
    """The one place committed events reach listeners: in order, each listener guarded."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []

    def add(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def deliver(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                # The event is committed whatever a listener does; the log line is the report.
                log.exception(
                    "an event listener failed on seq %d", event.seq, extra={"action": "listener_error"}
                )

    def deliver_all(self, events: Sequence[Event]) -> None:
        for event in events:
            self.deliver(event)


# -- one transaction's decisions ----------------------------------------------------

OpKind = Literal["enqueue", "append", "claim", "recover", "evict"]


@dataclass(slots=True, eq=False)
class Op:
    """One request waiting for the next commit. `fut` is None for the store's own steps (eviction)."""

    kind: OpKind
    fut: asyncio.Future[Any] | None
    events: Sequence[Event] = ()  #: enqueue (one per job, in order) or append (one)
    capacity: int = 0  #: enqueue: QUEUE_SIZE; evict: RETAIN_FINISHED
    at_ms: int = 0  #: claim: the time readiness is judged at
    limit: int = 0  #: claim: at most this many jobs
    reason: str = ""  #: recover: the interruption's reason


class Transaction(Protocol):
    """What a driver does inside one transaction for `decide`; rows come back as `JobView`s."""

    async def jobs(
        self, ids: Sequence[str], at_ms: int, limit: int
    ) -> tuple[Sequence[JobView], Sequence[JobView]]:
        """(The rows of these jobs, the known ones, locked until COMMIT in id order; then up to
        `limit` jobs ready at `at_ms` in claim order, locked, skipping rows another writer holds).
        One read for both where the driver can: it is the first statement of most batches."""

    async def recoverable(self) -> Sequence[JobView]:
        """Running attempts whose worker is gone (an expired lease; at open, every running one), locked."""

    async def evictable(self, limit: int) -> Sequence[JobView]:
        """Up to `limit` finished jobs, oldest finished first, locked; rows another writer holds skipped."""

    async def lock_log(self, delayed_at_ms: int | None) -> tuple[int, int, int, int]:
        """Lock the log's head until COMMIT (always after any job row): (last seq, queued jobs,
        finished jobs, and when `delayed_at_ms` is given the queued jobs not yet due then, which
        hold no QUEUE_SIZE place; else 0)."""

    async def write(self, batch: Batch) -> None:
        """Write the numbered events, the changed job rows, the evictions and the new log head."""

    async def lock_log_and_write(self, batch: Batch) -> tuple[int, int]:
        """For a batch decided without the log (it admits and evicts nothing): lock the log's head,
        number `batch.events` from it (`Batch.number`), write as `write` does, and return (the
        last seq before them, finished jobs before them). One round trip where the driver can."""


class Batch:
    """One transaction's decisions: the jobs it read or changed, and the events it will write.

    Events are decided before the log is locked and numbered (`number`) once it
    is, so concurrent writers overlap everything but their writes.
    """

    def __init__(self, at_ms: int) -> None:
        self.at_ms = at_ms
        self.views: dict[str, JobView] = {}  #: every job row read, as changed so far
        self.changed: dict[str, JobView] = {}
        self.events: list[Event] = []  #: seq 0 until numbered
        self.states: Counter[str] = Counter()  #: change of jobs by state
        self.ready = 0  #: change of ready jobs by this batch; plus, once the log is locked, the count
        self.finished = 0  #: finished jobs once the log is locked, as this batch leaves them
        self.evicted: list[JobView] = []  #: jobs this batch deletes with their events
        self.log_locked = False
        self._created: dict[str, int] = {}

    def record(self, prev: JobView | None, event: Event) -> JobView:
        view = apply(prev, event)  # raises before anything changes
        self.events.append(event)
        self.views[view.id] = self.changed[view.id] = view
        if prev is not None:
            self.states[prev.state] -= 1
            self.ready -= is_ready(prev, self.at_ms)
            self.finished -= prev.state in FINISHED_STATES
        self.states[view.state] += 1
        self.ready += is_ready(view, self.at_ms)
        self.finished += view.state in FINISHED_STATES
        return view

    def number(self, last_seq: int) -> None:
        """Give the events their seqs (the log is locked now) and new jobs their created_seq."""
        self.events = [e.with_seq(last_seq + i) for i, e in enumerate(self.events, 1)]
        for event in self.events:
            if event.type is _ENQUEUED:
                self._created[event.job_id] = event.seq
        self.changed = {job_id: self.final(v) for job_id, v in self.changed.items()}

    def created(self, job_id: str) -> bool:
        """Whether this batch creates the job (its row is new), once numbered."""
        return job_id in self._created

    def final(self, view: JobView) -> JobView:
        """`view` with its created_seq, if this batch created the job."""
        seq = self._created.get(view.id)
        return view if seq is None else view.with_created_seq(seq)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    # -- the requests ------------------------------------------------------------

    def enqueue(self, op: Op) -> list[tuple[JobView, bool] | QueueFull]:
        """Each job judged as if sent alone, in order: a later duplicate id is a re-send."""
        results: list[tuple[JobView, bool] | QueueFull] = []
        for event in op.events:
            known = self.views.get(event.job_id)
            try:
                if admit(known, self.ready, op.capacity):
                    results.append((self.record(None, event), True))
                else:
                    assert known is not None
                    results.append((known, False))
            except QueueFull as full:
                results.append(full)
        return results

    def append(self, op: Op) -> JobView:
        (event,) = op.events
        return self.record(next_of(self.views.get(event.job_id), event), event)

    def claim(self, op: Op, claimable: deque[JobView]) -> list[JobView]:
        claimed: list[JobView] = []
        while claimable and len(claimed) < op.limit:
            candidate = claimable.popleft()
            current = self.views.get(candidate.id, candidate)
            if is_ready(current, op.at_ms):
                claimed.append(self.record(current, start(current, at_ms=op.at_ms)))
        return claimed

    def recover(self, op: Op, recoverable: Sequence[JobView]) -> int:
        count = 0
        for candidate in recoverable:
            current = self.views.get(candidate.id, candidate)
            if current.state is JobState.RUNNING and current.version == candidate.version:
                self.record(current, recovered(current, at_ms=self.at_ms, reason=op.reason))
                count += 1
        return count

    def evict(self, op: Op, evictable: Sequence[JobView]) -> int:
        """Evict the oldest finished jobs beyond `op.capacity`, unless this batch changed them."""
        for candidate in evictable[: evictions(self.finished, op.capacity)]:
            if self.views.get(candidate.id, candidate) is candidate:
                self.evicted.append(candidate)
                self.states[candidate.state] -= 1
                self.finished -= 1
        return len(self.evicted)


async def decide(
    tx: Transaction, ops: Sequence[Op], at_ms: int, read: asyncio.Future[None] | None = None
) -> tuple[Batch, list[Any]]:
    """Read what `ops` need, decide each, lock the log, number and write: ONE transaction's work.

    Returns the batch and one outcome per op: its result, or the exception the
    rules raised for it (nothing of that op is written). Job rows are always
    locked before the log's head, so writers cannot deadlock. `read` is set once
    the rows are read and locked (a pipelined group commit may then begin the next batch).
    """
    b = Batch(at_ms)
    ids = sorted({e.job_id for op in ops for e in op.events})
    n_claim = sum(op.limit for op in ops if op.kind == "claim")
    claim_at = max((op.at_ms for op in ops if op.kind == "claim"), default=at_ms)
    claimable: deque[JobView] = deque()
    if ids or n_claim:
        named, ready = await tx.jobs(ids, claim_at, n_claim)
        for view in named:
            b.views[view.id] = view
        claimable.extend(ready)
    recoverable = await tx.recoverable() if any(op.kind == "recover" for op in ops) else ()
    evicting = any(op.kind == "evict" for op in ops)
    evictable = await tx.evictable(EVICT_BATCH) if evicting else ()
    if read is not None:
        read.set_result(None)
    outcomes: list[Any] = [None] * len(ops)

    def attempt(i: int, fn: Callable[[], Any]) -> None:
        try:
            outcomes[i] = fn()
        except (KaspError, ProjectionError) as exc:
            outcomes[i] = exc

    for i, op in enumerate(ops):
        if op.kind == "append":
            attempt(i, lambda op=op: b.append(op))  # type: ignore[misc]
        elif op.kind == "claim":
            outcomes[i] = b.claim(op, claimable)
        elif op.kind == "recover":
            outcomes[i] = b.recover(op, recoverable)
    admits = any(e.job_id not in b.views for op in ops if op.kind == "enqueue" for e in op.events)
    if admits or evictable:
        # The log's head last: from here to COMMIT this batch alone numbers events and counts the queue.
        last_seq, queued, finished, delayed = await tx.lock_log(at_ms if admits else None)
        b.log_locked = True
        b.finished += finished
        if admits:
            b.ready += queued - delayed
        for i, op in enumerate(ops):
            if op.kind == "enqueue":
                outcomes[i] = b.enqueue(op)
            elif op.kind == "evict":
                outcomes[i] = b.evict(op, evictable)
        if b.events or b.evicted:
            b.number(last_seq)
            await tx.write(b)
    else:
        for i, op in enumerate(ops):
            if op.kind == "enqueue":
                outcomes[i] = b.enqueue(op)  # every id is known: answered without the log
            elif op.kind == "evict":
                outcomes[i] = 0
        if b.events:
            # Every event is decided already (outcomes, claims, recoveries: the usual batch of a
            # busy pool): the driver locks the head, numbers and writes in one step.
            last_seq, finished = await tx.lock_log_and_write(b)
            b.log_locked = True
            b.finished += finished
    return b, outcomes


# -- the group commit ---------------------------------------------------------------


class GroupCommit:
    """Requests queue here; one task commits them in batches, one transaction per batch.

    `begin()` opens a transaction (committing on a clean exit, rolling back on
    an exception). With `pipelined` (a store whose transactions may overlap:
    PostgreSQL) the next batch begins as soon as the previous one has read and
    locked its rows, so its reads and decisions run while the previous one
    writes and commits; at most two are in flight, a batch never names a job the
    one in flight names, the log's head orders their writes, and listeners and
    callers hear of them in commit order. A driver error goes through `health` here and nowhere else:
    an outage fails the whole batch with `StoreUnavailable` (then `on_outage`
    runs, e.g. to drop pooled connections); any other error is a bug, logged,
    and the batch is retried request by request, so one bad request cannot
    fail its neighbours.
    """

    def __init__(
        self,
        begin: Callable[[], AbstractAsyncContextManager[Transaction]],
        listeners: Listeners,
        health: StoreHealth,
        *,
        retain_finished: int,
        name: str,
        max_batch: int = MAX_BATCH,
        on_outage: Callable[[], Awaitable[None]] | None = None,
        pipelined: bool = False,
    ) -> None:
        self._begin = begin
        self._listeners = listeners
        self._health = health
        self._on_outage = on_outage
        self._retain = retain_finished
        self._name = name
        self._max_batch = max_batch
        self._pending: list[Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._evicting = False  #: an eviction step is queued or running
        self._pipelined = pipelined
        #: pipelined: the newest batch in flight (its task, the moment its rows are read, the
        #: jobs it names) and the one before it
        self._newest: asyncio.Task[None] | None = None
        self._newest_read: asyncio.Future[None] | None = None
        self._newest_ids: frozenset[str] = frozenset()
        self._older: asyncio.Task[None] | None = None

    def submit(self, op: Op) -> None:
        self._pending.append(op)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name=self._name)

    def request(self, kind: OpKind, **fields: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(Op(kind, fut, **fields))
        return fut

    async def close(self) -> None:
        """Let what is queued commit (bounded by CLOSE_WAIT_S)."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=CLOSE_WAIT_S)
        running = [t for t in (self._older, self._newest) if t is not None]
        if running:
            await asyncio.wait(running, timeout=CLOSE_WAIT_S)

    async def _flush(self) -> None:
        if not self._pipelined:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._run(batch)
            return
        # Pipelined (measured, bench/batch.py on PostgreSQL: kasp was ~30% busy and its backend
        # less, each waiting for the other one batch at a time; docs/PERFORMANCE.md).
        loop = asyncio.get_running_loop()
        while self._pending:
            if self._older is not None and not self._older.done():
                await asyncio.wait([self._older])
            newest, newest_read = self._newest, self._newest_read
            if newest is not None and newest_read is not None and not newest.done():
                await asyncio.wait([newest, newest_read], return_when=asyncio.FIRST_COMPLETED)
            busy = self._newest_ids if newest is not None and not newest.done() else frozenset()
            batch = self._take(busy)
            if not batch:  # every queued request names a job the batch in flight changes
                assert newest is not None
                await asyncio.wait([newest])
                continue
            read: asyncio.Future[None] = loop.create_future()
            task = loop.create_task(self._run(batch, after=newest, read=read), name=self._name)
            self._older, self._newest, self._newest_read = newest, task, read
            self._newest_ids = frozenset(e.job_id for op in batch for e in op.events)

    def _take(self, busy: frozenset[str]) -> list[Op]:
        """The next batch: queued requests in order, up to max_batch, leaving for later any that
        names a job in `busy` (so two batches in flight never create or change the same job)."""
        if not busy:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            return batch
        batch, later = [], []
        for op in self._pending:
            if len(batch) < self._max_batch and not any(e.job_id in busy for e in op.events):
                batch.append(op)
            else:
                later.append(op)
        self._pending = later
        return batch

    async def _run(
        self,
        batch: list[Op],
        *,
        after: asyncio.Task[None] | None = None,
        read: asyncio.Future[None] | None = None,
    ) -> None:
        """Commit one batch; on a failure that is not an outage, each request alone."""
        try:
            try:
                await self._commit(batch, after=after, read=read)
            except Exception as exc:
                error = self._health.failed(exc)
                if isinstance(error, StoreUnavailable):  # nothing of it committed; logged once per outage
                    if self._on_outage is not None:
                        await self._on_outage()
                    _fail(batch, error)
                    return
                log.error("a store commit failed", exc_info=exc, extra={"action": "store_commit_error"})
                if after is not None:
                    await asyncio.wait([after])  # its neighbours, alone, after the batch before it
                if len(batch) == 1:
                    _fail(batch, exc)
                    return
                for op in batch:  # one bad request must not fail its neighbours: try each alone
                    try:
                        await self._commit([op])
                    except Exception as alone:
                        _fail([op], self._health.failed(alone))
        finally:
            if read is not None and not read.done():
                read.set_result(None)  # failed before its reads: the next batch need not wait

    async def _commit(
        self,
        ops: list[Op],
        *,
        after: asyncio.Task[None] | None = None,
        read: asyncio.Future[None] | None = None,
    ) -> None:
        try:
            async with self._begin() as tx:
                b, outcomes = await decide(tx, ops, _judged_at(ops), read)
        finally:
            if any(op.kind == "evict" for op in ops):
                self._evicting = False
        if after is not None:
            # The batch before this one committed first (its head lock held this one's write
            # back); its listeners and callers hear of it first too.
            await asyncio.wait([after])
        self._health.succeeded()  # the commit reached the store: an outage, if any, is over
        # Committed: listeners first (in seq order), then the callers.
        self._listeners.deliver_all(b.events)
        for op, outcome in zip(ops, outcomes, strict=True):
            fut = op.fut
            if fut is None or fut.done():
                continue  # the store's own step, or the caller went away: the write stands
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(_final(b, outcome))
        if b.log_locked and b.finished > self._retain and not self._evicting:
            self._evicting = True  # the next batch deletes a bounded step of the excess
            self.submit(Op("evict", None, capacity=self._retain))


class GroupCommitWrites:
    """The write side of a store whose every write is a request to its group commit
    (SQLite, PostgreSQL): written once here, so the drivers keep only their own reads."""

    _commits: GroupCommit

    def certainly_full(self, job_id: str, capacity: int) -> bool:
        return False  # admission is decided in the commit, against the database's counts

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        (outcome,) = await self.enqueue_many([event], capacity=capacity)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def enqueue_many(
        self, events: Sequence[Event], *, capacity: int
    ) -> list[tuple[JobView, bool] | BaseException]:
        result: list[tuple[JobView, bool] | BaseException] = await self._commits.request(
            "enqueue", events=events, capacity=capacity
        )
        return result

    async def append(self, event: Event) -> JobView:
        view: JobView = await self._commits.request("append", events=(event,))
        return view

    async def claim_ready(self, *, at_ms: int, limit: int = 1) -> list[JobView]:
        claimed: list[JobView] = await self._commits.request("claim", at_ms=at_ms, limit=limit)
        return claimed


def _judged_at(ops: Sequence[Op]) -> int:
    """The time a batch judges readiness at: its requests' own (as a store that commits each
    request alone would), else the clock's."""
    times = [op.at_ms for op in ops if op.at_ms] + [e.at_ms for op in ops for e in op.events]
    return max(times) if times else now_ms()


def _final(b: Batch, outcome: Any) -> Any:
    """An outcome with the created_seq of the jobs this batch created."""
    if isinstance(outcome, JobView):
        return b.final(outcome)
    if isinstance(outcome, list):
        return [_final(b, o) for o in outcome]
    if isinstance(outcome, tuple):
        return (b.final(outcome[0]), outcome[1])
    return outcome


def _fail(ops: Sequence[Op], exc: BaseException) -> None:
    for op in ops:
        if op.fut is not None and not op.fut.done():
            op.fut.set_exception(exc)
